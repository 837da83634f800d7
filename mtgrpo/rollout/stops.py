"""Stop strings checked on token ids, on the device, one table lookup per sampled token.

A stop string ``s`` (as UTF-8 bytes, length ``L``) first appears in a row's sampled text at the
token ``u`` that completes it. Either ``u`` contains ``s`` whole (possibly with more bytes before
or after), or the text before ``u`` ends with ``s[:j]`` and ``u`` starts with ``s[j:]`` for some
``0 < j < L`` (the string is split across tokens). So each row carries, per stop string, the set
of ``j`` such that its text ends with ``s[:j]``, as bits of an int64 (bit ``j``), and each sampled
token updates it from four per-token tables built once from the vocabulary:

- ``contains[u]``: ``s`` is a substring of ``u``'s bytes;
- ``starts[u]``: bit ``j`` set when ``u`` starts with ``s[j:]`` (a match completes);
- ``ends[u]``: bit ``j`` set when ``u`` ends with ``s[:j]`` (``j <= len(u)``);
- ``mid[u]``: bit ``i`` set when ``s[i:i + len(u)] == u`` (``u`` continues a partial match:
  the new state gets bit ``i + len(u)``).

``hit = contains[u] | (state & starts[u] != 0)`` and
``state = (ends[u] | (state & mid[u]) << len(u)) & bits(1..L-1)``. Special tokens count with
their text (as the old decode-the-tail check counted them). Bytes, not characters, so a stop
string split inside a multi-byte character is found too; stop strings up to 63 bytes.
"""

from __future__ import annotations

import functools
from typing import Sequence

MAX_STOP_BYTES = 63


@functools.lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet, reversed: the printable character each byte maps to."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def token_bytes(tokenizer, vocab_size: int | None = None) -> list[bytes]:
    """The bytes each token id adds to the text (ids past the tokenizer's end add none).

    Byte-level BPE tokens (GPT-2, Qwen) map back through the byte alphabet exactly; other
    tokenizers fall back to ``convert_tokens_to_string`` per token. Special tokens give their
    text.
    """
    size = len(tokenizer) if vocab_size is None else vocab_size
    pieces = tokenizer.convert_ids_to_tokens(list(range(min(size, len(tokenizer)))))
    special = {i: t.content for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()}
    decoder = _byte_decoder()
    out: list[bytes] = []
    for i, piece in enumerate(pieces):
        if i in special:
            out.append(special[i].encode())
        elif piece is None:
            out.append(b"")
        elif all(ch in decoder for ch in piece):
            out.append(bytes(decoder[ch] for ch in piece))
        else:
            out.append(tokenizer.convert_tokens_to_string([piece]).encode())
    out += [b""] * (size - len(out))
    return out


class StopTables:
    """The per-token tables of a list of stop strings, as tensors of shape ``(vocab, S)``."""

    def __init__(self, vocab: Sequence[bytes], stop: Sequence[str]):
        import torch

        self.stop = [s for s in dict.fromkeys(stop) if s]
        encoded = [s.encode() for s in self.stop]
        for s, b in zip(self.stop, encoded):
            if len(b) > MAX_STOP_BYTES:
                raise ValueError(f"stop string {s!r} is {len(b)} bytes long; at most "
                                 f"{MAX_STOP_BYTES} are supported")
        V, S = len(vocab), len(encoded)
        # Python lists first, one tensor each at the end: per-element tensor writes would cost
        # seconds for a 152k-token vocabulary.
        contains = [[False] * S for _ in range(V)]
        starts = [[0] * S for _ in range(V)]
        ends = [[0] * S for _ in range(V)]
        mid = [[0] * S for _ in range(V)]
        for k, s in enumerate(encoded):
            L, alphabet = len(s), set(s)
            for v, u in enumerate(vocab):
                n = len(u)
                if n == 0:
                    mid[v][k] = -1  # adds nothing: the state stays as it is
                    continue
                if not alphabet.intersection(u):
                    continue  # shares no byte with s: every table entry is 0
                contains[v][k] = s in u
                st = en = md = 0
                for j in range(1, L):
                    if u.startswith(s[j:]):
                        st |= 1 << j
                    if j <= n and u.endswith(s[:j]):
                        en |= 1 << j
                for i in range(1, L - n):
                    if s[i:i + n] == u:
                        md |= 1 << i
                starts[v][k], ends[v][k], mid[v][k] = st, en, md
        contains = torch.tensor(contains, dtype=torch.bool).reshape(V, S)
        starts, ends, mid = (torch.tensor(t, dtype=torch.int64).reshape(V, S)
                             for t in (starts, ends, mid))
        lengths = torch.tensor([min(len(u), MAX_STOP_BYTES) for u in vocab], dtype=torch.int64)
        self.full = torch.tensor([(1 << len(s)) - 2 for s in encoded], dtype=torch.int64)
        self.contains, self.starts, self.ends, self.mid, self.lengths = (
            contains, starts, ends, mid, lengths)

    def __len__(self) -> int:
        return len(self.stop)

    def to(self, device) -> "StopTables":
        for name in ("contains", "starts", "ends", "mid", "lengths", "full"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def initial_state(self, batch: int, device):
        import torch

        return torch.zeros((batch, len(self)), dtype=torch.int64, device=device)

    def step(self, state, tokens):
        """(new state, hit): ``hit[b]`` is True when token ``tokens[b]`` completes a stop string."""
        hit = (self.contains[tokens] | ((state & self.starts[tokens]) != 0)).any(-1)
        shifted = (state & self.mid[tokens]) << self.lengths[tokens][:, None]
        return (self.ends[tokens] | shifted) & self.full, hit
