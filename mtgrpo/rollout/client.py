"""Async HTTP client for vLLM's OpenAI-compatible server, speaking token ids only.

Prompts go out as lists of token ids and samples come back as token ids (``return_token_ids``)
with one logprob per sampled token, so nothing is ever re-tokenized. Every request has a bounded
total time: a server that died, refuses connections, answers with an error or stops answering
raises :class:`SamplerError` with a one-line reason instead of hanging the training loop.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from dataclasses import dataclass
from typing import Any, Sequence

import httpx


@functools.lru_cache(maxsize=None)
def tls_context() -> ssl.SSLContext:
    """One verifying TLS context for every client of this process.

    httpx builds a new context, loading the whole CA bundle, for every client it creates: 20-40 ms
    of CPU each time, and a rollout opens a client per turn (docs/rollouts.md). Built once here
    and shared; plain-HTTP servers never use it, HTTPS ones are still verified.
    """
    return httpx.create_ssl_context()


class SamplerError(RuntimeError):
    """The generation backend failed (server dead, unreachable, too slow or answering errors)."""


@dataclass
class Sample:
    """One sampled continuation: token ids, one logprob per token (None when not requested), its
    text and why it ended."""

    token_ids: list[int]
    logprobs: list[float] | None
    text: str
    finish_reason: str  # "stop" (EOS or a stop string) or "length"


class VLLMClient:
    """Talks to one vLLM server (``/v1/completions``, ``/health``, ``/collective_rpc``).

    ``timeout_s`` bounds the whole of one request (connect, send, generate, read): when it
    passes, the request fails with :class:`SamplerError`. ``connect_timeout_s`` is shorter so a
    dead server is reported at once. The async methods open a connection pool per call, so the
    client can be used from any event loop (``asyncio.run`` per training step included).
    """

    def __init__(self, base_url: str, *, model: str | None = None, timeout_s: float = 300.0,
                 connect_timeout_s: float = 10.0, max_connections: int = 256):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = float(timeout_s)
        self.connect_timeout_s = float(min(connect_timeout_s, timeout_s))
        self.max_connections = max_connections

    # -- plumbing -------------------------------------------------------------------------------
    def _timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout_s, connect=self.connect_timeout_s)

    def async_client(self) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=self.max_connections,
                              max_keepalive_connections=self.max_connections)
        return httpx.AsyncClient(timeout=self._timeout(), limits=limits, verify=tls_context())

    def _fail(self, path: str, err: BaseException) -> SamplerError:
        where = f"vLLM server at {self.base_url}"
        if isinstance(err, (asyncio.TimeoutError, httpx.TimeoutException)):
            if isinstance(err, httpx.ConnectTimeout):
                msg = f"{where} did not accept a connection within {self.connect_timeout_s:g}s"
            else:
                msg = (f"{where} did not answer {path} within {self.timeout_s:g}s "
                       "(vllm_request_timeout_s); it is stuck or overloaded")
        elif isinstance(err, httpx.ConnectError):
            msg = f"{where} is unreachable ({err or 'connection refused'}); is it running?"
        elif isinstance(err, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
            msg = f"{where} dropped the connection during {path} ({err or type(err).__name__}); " \
                  "it probably died"
        else:
            msg = f"{where}: {path} failed: {type(err).__name__}: {err}"
        return SamplerError(" ".join(msg.split()))

    def _check_response(self, path: str, response: httpx.Response) -> Any:
        if response.status_code != 200:
            detail = response.text[:500]
            try:
                body = response.json()
                detail = (body.get("error") or {}).get("message") or body.get("detail") or detail \
                    if isinstance(body, dict) else detail
            except (ValueError, AttributeError):
                pass
            raise SamplerError(" ".join(
                f"vLLM server at {self.base_url} answered {path} with HTTP "
                f"{response.status_code}: {detail}".split()))
        if not response.content.strip():
            return None  # some routes answer an empty 200 (older vLLM: /reset_prefix_cache)
        try:
            return response.json()
        except ValueError as err:
            raise SamplerError(f"vLLM server at {self.base_url} sent invalid JSON for {path}: "
                               f"{err}") from None

    async def post(self, path: str, body: dict, *, client: httpx.AsyncClient | None = None) -> Any:
        """POST JSON and return the decoded answer; every failure is a ``SamplerError``."""
        async def call(c: httpx.AsyncClient) -> Any:
            response = await c.post(self.base_url + path, json=body)
            return self._check_response(path, response)

        try:
            # wait_for bounds the total time too: httpx's read timeout is per read, and a server
            # that trickles bytes would otherwise never time out.
            if client is not None:
                return await asyncio.wait_for(call(client), self.timeout_s + 1.0)
            async with self.async_client() as c:
                return await asyncio.wait_for(call(c), self.timeout_s + 1.0)
        except SamplerError:
            raise
        except (httpx.HTTPError, asyncio.TimeoutError, OSError) as err:
            raise self._fail(path, err) from None

    def post_sync(self, path: str, body: dict | None = None, *,
                  timeout_s: float | None = None) -> Any:
        """Blocking POST (weight sync runs on the training thread, outside any event loop)."""
        timeout = httpx.Timeout(timeout_s or self.timeout_s, connect=self.connect_timeout_s)
        try:
            with httpx.Client(timeout=timeout, verify=tls_context()) as c:
                response = c.post(self.base_url + path, json=body)
        except (httpx.HTTPError, OSError) as err:
            raise self._fail(path, err) from None
        return self._check_response(path, response)

    def healthy(self, timeout_s: float = 2.0) -> bool:
        """True when ``/health`` answers 200 within ``timeout_s``."""
        try:
            return httpx.get(self.base_url + "/health", timeout=timeout_s,
                             verify=tls_context()).status_code == 200
        except (httpx.HTTPError, OSError):
            return False

    # -- sampling -------------------------------------------------------------------------------
    def completion_body(self, prompts: Sequence[Sequence[int]], *, max_tokens: int,
                        temperature: float, top_p: float, stop: Sequence[str] = (),
                        seed: int | None = None, n: int = 1, ignore_eos: bool = False,
                        min_tokens: int = 0, logprobs: bool = True, **extra: Any) -> dict:
        """The ``/v1/completions`` body for token-id prompts (stop strings kept in the output).

        ``logprobs``: ask for the sampled tokens' logprobs (a quarter of a small model's server
        time on CPU: docs/rollouts.md). ``extra`` fields (e.g. ``logit_bias``) are passed to the
        server as they are.
        """
        body: dict[str, Any] = {
            "prompt": [list(map(int, p)) for p in prompts],
            "max_tokens": int(max_tokens), "temperature": float(temperature),
            "top_p": float(top_p), "n": n, "return_token_ids": True,
            # Text leaves special tokens out (the ids keep them), as TransformersSampler does.
            "stop": list(stop), "include_stop_str_in_output": True, "skip_special_tokens": True,
        }
        if logprobs:
            body["logprobs"] = 0  # the sampled token's own logprob, no alternatives
        if self.model:
            body["model"] = self.model
        if seed is not None:
            body["seed"] = int(seed)
        if ignore_eos:
            body["ignore_eos"] = True
        if min_tokens:
            body["min_tokens"] = int(min_tokens)
        body.update(extra)
        return body

    async def complete(self, prompts: Sequence[Sequence[int]], *,
                       client: httpx.AsyncClient | None = None, **params: Any) -> list[Sample]:
        """One request carrying every prompt; one ``Sample`` per prompt (``n=1``), in order."""
        if not prompts:
            return []
        body = self.completion_body(prompts, **params)
        answer = await self.post("/v1/completions", body, client=client)
        return self._samples(answer, len(prompts) * body["n"], body["n"], "logprobs" in body)

    def _samples(self, answer: Any, expected: int, n: int, logprobs: bool) -> list[Sample]:
        choices = answer.get("choices") if isinstance(answer, dict) else None
        if not isinstance(choices, list) or len(choices) != expected:
            raise SamplerError(f"vLLM server at {self.base_url} returned "
                               f"{len(choices) if isinstance(choices, list) else 'no'} choices "
                               f"for {expected} prompts")
        # With several prompts (and n > 1) the server numbers choices prompt-major.
        choices = sorted(choices, key=lambda c: c["index"])
        samples = []
        for choice in choices:
            ids = choice.get("token_ids")
            lps = (choice.get("logprobs") or {}).get("token_logprobs") if logprobs else None
            if ids is None or (logprobs and (lps is None or len(ids) != len(lps))):
                raise SamplerError(
                    f"vLLM server at {self.base_url} returned no token ids or logprobs; it must "
                    "be vLLM >= 0.10 (return_token_ids)")
            samples.append(Sample(list(ids), None if lps is None else [float(x) for x in lps],
                                  choice.get("text", ""), choice.get("finish_reason") or "stop"))
        return samples

    async def score(self, prompts: Sequence[Sequence[int]]) -> list[list[float]]:
        """Log-probability of every prompt token given its prefix, under the server's weights.

        Returns, per prompt, ``len(prompt) - 1`` floats: entry ``k`` is ``log p(prompt[k + 1] |
        prompt[: k + 1])`` (the first token has no prefix). Used by on-policy checks.
        """
        if not prompts:
            return []
        body = {"prompt": [list(map(int, p)) for p in prompts], "max_tokens": 1,
                "temperature": 0.0, "prompt_logprobs": 0, "logprobs": 0}
        if self.model:
            body["model"] = self.model
        answer = await self.post("/v1/completions", body)
        choices = sorted(answer.get("choices", []), key=lambda c: c["index"])
        if len(choices) != len(prompts):
            raise SamplerError(f"vLLM server at {self.base_url} scored {len(choices)} of "
                               f"{len(prompts)} prompts")
        out = []
        for prompt, choice in zip(prompts, choices):
            entries = choice.get("prompt_logprobs") or []
            if len(entries) != len(prompt):
                raise SamplerError(f"vLLM server at {self.base_url} returned "
                                   f"{len(entries)} prompt logprobs for {len(prompt)} tokens")
            row = []
            for token, entry in zip(prompt[1:], entries[1:]):
                hit = (entry or {}).get(str(int(token)))
                if hit is None:
                    raise SamplerError(f"vLLM server at {self.base_url} omitted the logprob of "
                                       f"prompt token {token}")
                row.append(float(hit["logprob"] if isinstance(hit, dict) else hit))
            out.append(row)
        return out

    def score_sync(self, prompts: Sequence[Sequence[int]]) -> list[list[float]]:
        return run_sync(self.score(prompts))

    def __repr__(self) -> str:
        return f"VLLMClient({self.base_url!r}, model={self.model!r}, timeout_s={self.timeout_s})"


def run_sync(coro):
    """Run a coroutine to completion from sync code, even if an event loop is already running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # Inside a running loop (a notebook, an async caller): run it on a private loop in a thread.
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()

