"""TransformersSampler: the no-vLLM path, on the tiny model."""

from __future__ import annotations

import asyncio

import pytest

from mtgrpo.rollout import Sampler, TransformersSampler
from mtgrpo.testing.doubles import FIXED_PASSAGE, AlwaysCalls, FixedSearch
from mtgrpo.trainer.environment import ToolEnvironment
from mtgrpo.trainer.types import QARecord

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def model_and_tok(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.train()  # as inside a trainer: the sampler must switch to eval and back
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def prompts_of(tok, *questions):
    return [tok.encode(f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n",
                       add_special_tokens=False) for q in questions]


def generate(sampler, prompts, max_tokens, stop=(), seed=3, temperature=0.8):
    return asyncio.run(sampler.generate(prompts, max_tokens=max_tokens, temperature=temperature,
                                        top_p=1.0, stop=list(stop), seed=seed))


def policy_logprobs(model, prompt, ids, temperature):
    with torch.no_grad():
        logits = model(torch.tensor([prompt + ids])).logits[0, len(prompt) - 1:-1].float()
    return torch.log_softmax(logits / temperature, -1).gather(
        -1, torch.tensor(ids)[:, None])[:, 0]


def test_budgets_and_logprobs_of_the_policy(model_and_tok):
    model, tok = model_and_tok
    sampler = TransformersSampler(model, tok, batch_size=2)
    assert isinstance(sampler, Sampler)
    prompts = prompts_of(tok, "one", "two words here", "three")
    samples = generate(sampler, prompts, [5, 9, 7])
    for prompt, sample, budget in zip(prompts, samples, [5, 9, 7]):
        assert 1 <= len(sample.token_ids) <= budget
        assert sample.finish_reason == ("length" if len(sample.token_ids) == budget else "stop")
        expected = policy_logprobs(model, prompt, sample.token_ids, 0.8)
        # Left padding in the batch changes nothing but float rounding.
        assert torch.allclose(torch.tensor(sample.logprobs), expected, atol=1e-3)
    assert model.training


def test_seed_repeats_without_touching_global_rng(model_and_tok):
    model, tok = model_and_tok
    sampler = TransformersSampler(model, tok)
    prompts = prompts_of(tok, "q", "q")
    torch.manual_seed(123)
    first = generate(sampler, prompts, 12)
    after = torch.rand(1)
    torch.manual_seed(123)
    assert [s.token_ids for s in generate(sampler, prompts, 12)] == [s.token_ids for s in first]
    assert torch.equal(torch.rand(1), after)


def test_stop_string_is_kept_and_ends_the_row(model_and_tok):
    model, tok = model_and_tok
    sampler = TransformersSampler(model, tok)
    prompts = prompts_of(tok, "q")
    [free] = generate(sampler, prompts, 30, temperature=1.0)
    words = [w for w in free.text.split() if w.isascii() and w.isalpha() and len(w) >= 3]
    assert words, free.text
    [cut] = generate(sampler, prompts, 30, stop=[words[0]], temperature=1.0)
    assert cut.finish_reason == "stop"
    assert cut.text == free.text[:free.text.index(words[0]) + len(words[0])]
    assert free.token_ids[:len(cut.token_ids)] == cut.token_ids
    assert words[0] in tok.decode(cut.token_ids)


def test_eos_token_ends_the_row_and_is_kept(model_and_tok):
    model, tok = model_and_tok
    sampler = TransformersSampler(model, tok)
    prompts = prompts_of(tok, "q")
    [free] = generate(sampler, prompts, 20, temperature=1.0)
    eos = free.token_ids[3]  # pretend the fourth sampled token is an EOS token
    sampler.eos_ids = [eos]
    [cut] = generate(sampler, prompts, 20, temperature=1.0)
    first = free.token_ids.index(eos)
    assert cut.token_ids == free.token_ids[:first + 1] and cut.finish_reason == "stop"


def test_environment_runs_on_the_transformers_sampler(model_and_tok):
    model, tok = model_and_tok
    env = ToolEnvironment(tok, AlwaysCalls(), {"wiki_search": FixedSearch()}, max_turns=2,
                          max_tool_calls=1, max_tokens_per_turn=6, max_completion_length=100,
                          max_prompt_length=512, temperature=1.0, top_p=1.0)
    episodes = env.rollout_sync([QARecord("a", "hello?", ("x",))], 3,
                                TransformersSampler(model, tok), seed=0)
    for ep in episodes:
        assert [t.role for t in ep.turns] == ["assistant", "tool", "assistant"]
        assert ep.turns[1].tool_ok and FIXED_PASSAGE in ep.turns[1].text
        second = ep.turns[2]
        context = ep.prompt_ids + ep.turns[0].token_ids + ep.turns[1].token_ids
        expected = policy_logprobs(model, context, second.token_ids, 1.0)
        assert torch.allclose(torch.tensor(second.logprobs), expected, atol=1e-3)


def test_wrapped_model_is_unwrapped(model_and_tok):
    model, tok = model_and_tok

    class Wrapper(torch.nn.Module):  # like DistributedDataParallel: the model is .module
        def __init__(self, module):
            super().__init__()
            self.module = module

    sampler = TransformersSampler(Wrapper(model), tok)
    direct = generate(TransformersSampler(model, tok), prompts_of(tok, "q"), 6)
    assert [s.token_ids for s in generate(sampler, prompts_of(tok, "q"), 6)] == \
        [s.token_ids for s in direct]


# -- the fast path against references -------------------------------------------------------------

def old_finish(tok, eos_ids, tokens, budget, stop):
    """The previous TransformersSampler's rule (decode the tail after every token), kept as the
    reference: (tokens kept, finish reason, text)."""
    tail_tokens = max((len(s) for s in stop), default=0) + 2
    for n, token in enumerate(tokens, start=1):
        if token in eos_ids:
            return n, "stop", tok.decode(tokens[:n], skip_special_tokens=True)
        if stop:
            tail = tok.decode(tokens[max(0, n - tail_tokens):n])
            if any(s in tail for s in stop):
                text = tok.decode(tokens[:n], skip_special_tokens=True)
                cut = min(text.find(s) + len(s) for s in stop if s in text) \
                    if any(s in text for s in stop) else len(text)
                return n, "stop", text[:cut]
        if n >= budget:
            return n, "length", tok.decode(tokens[:n], skip_special_tokens=True)
    return len(tokens), "length", tok.decode(tokens, skip_special_tokens=True)


def test_stop_tables_match_a_byte_search():
    """Random token sequences over a small alphabet: the device state machine reports the first
    token at which the concatenated bytes contain a stop string, exactly as a plain search."""
    from mtgrpo.rollout.stops import StopTables

    vocab = [b"", b"a", b"b", b"ab", b"ba", b"abc", b"c", b"cab", b"xabcx", b"bc", b"aab"]
    stop = ["abc", "bca", "cc", "aabca"]
    tables = StopTables(vocab, stop)
    g = torch.Generator().manual_seed(0)
    seqs = torch.randint(0, len(vocab), (400, 12), generator=g)
    state = tables.initial_state(400, "cpu")
    first = [None] * 400
    for t in range(12):
        state, hit = tables.step(state, seqs[:, t])
        for b in range(400):
            if hit[b] and first[b] is None:
                first[b] = t
    for b in range(400):
        text, expected = b"", None
        for t in range(12):
            text += vocab[seqs[b, t]]
            if any(s.encode() in text for s in stop):
                expected = t
                break
        assert first[b] == expected, (b, [vocab[i] for i in seqs[b].tolist()])


def stop_cases(tok, tokens):
    """Stop strings cut from a sample's own bytes: inside one token with bytes around it, split
    across two and three tokens, and several at once."""
    from mtgrpo.rollout.stops import token_bytes

    vocab = token_bytes(tok)
    pieces = [vocab[t] for t in tokens]
    cases = []
    for i, piece in enumerate(pieces[:-2]):
        try:
            if len(piece) >= 3:  # a token that contains the stop string plus more
                cases.append([piece[1:-1].decode()])
            if len(piece) >= 2 and pieces[i + 1]:  # split across two tokens
                cases.append([(piece[-2:] + pieces[i + 1][:1]).decode()])
            if len(pieces[i + 1]) >= 1 and pieces[i + 2]:  # across three
                cases.append([(piece[-1:] + pieces[i + 1] + pieces[i + 2][:1]).decode()])
        except UnicodeDecodeError:
            continue
    cases = [c for c in cases if c[0].strip()]
    return cases[:12] + [[cases[3][0], cases[7][0], cases[11][0]]]


def test_stop_boundaries_give_what_the_old_path_gave(model_and_tok):
    """The same samples (same seed: a stop does not change what is sampled before it) cut by
    the device check and by the old decode-the-tail rule give the same ids, text and reason."""
    model, tok = model_and_tok
    sampler = TransformersSampler(model, tok)
    prompts = prompts_of(tok, "q", "another question", "three")
    free = generate(sampler, prompts, 30, temperature=1.0, seed=7)
    checked = 0
    for row, sample in enumerate(free):
        for stop in stop_cases(tok, sample.token_ids):
            cut = generate(sampler, prompts, 30, stop=stop, temperature=1.0, seed=7)[row]
            n, reason, text = old_finish(tok, sampler.eos_ids, free[row].token_ids, 30, stop)
            assert (cut.token_ids, cut.finish_reason, cut.text) == \
                (free[row].token_ids[:n], reason, text), stop
            checked += reason == "stop"
    assert checked >= 20


@pytest.mark.slow
def test_greedy_ids_equal_plain_generate(model_and_tok):
    model, tok = model_and_tok
    prompts = prompts_of(tok, "a", "a longer question here", "mid size q")
    for cache in ("dynamic", "static"):
        sampler = TransformersSampler(model, tok, cache=cache)
        ours = generate(sampler, prompts, 12, temperature=0.0)
        for prompt, sample in zip(prompts, ours):
            with torch.no_grad():
                plain = model.generate(torch.tensor([prompt]), do_sample=False,
                                       max_new_tokens=12, eos_token_id=sampler.eos_ids,
                                       pad_token_id=sampler.pad_id)[0, len(prompt):].tolist()
            n, _, _ = old_finish(tok, sampler.eos_ids, plain, 12, [])
            assert sample.token_ids == plain[:n], cache


def chi_square_p(a: list[int], b: list[int]) -> float:
    """Two-sample chi-square test of equal distributions over the tokens seen (tokens with
    fewer than 10 counts in both together are pooled)."""
    from collections import Counter

    ca, cb = Counter(a), Counter(b)
    keys = [k for k in set(ca) | set(cb) if ca[k] + cb[k] >= 10]
    rows = [(ca[k], cb[k]) for k in keys]
    rest = (len(a) - sum(r[0] for r in rows), len(b) - sum(r[1] for r in rows))
    if sum(rest):
        rows.append(rest)
    na, nb = len(a), len(b)
    stat = 0.0
    for x, y in rows:
        total = x + y
        ea, eb = total * na / (na + nb), total * nb / (na + nb)
        stat += (x - ea) ** 2 / ea + (y - eb) ** 2 / eb
    df = len(rows) - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2), torch.tensor(stat / 2)))


@pytest.mark.slow
def test_token_frequencies_match_plain_generate(model_and_tok):
    """512 samples of 6 tokens from one prompt, our path and plain ``generate`` at different
    seeds (temperature 0.7, top-p 0.9): the first and the sixth token's frequencies pass a
    two-sample chi-square test at p > 0.001; a sampler at temperature 1.0 fails it (so the test
    can fail). The random model's next-token distribution is nearly uniform over 1024 tokens,
    too flat for 512 samples to tell apart: its final norm is scaled up (x5) so that a few
    dozen tokens carry the mass."""
    import copy

    model, tok = model_and_tok
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.model.norm.weight.mul_(5.0)
    [prompt] = prompts_of(tok, "tell me")
    n, steps = 512, 6
    sampler = TransformersSampler(model, tok)
    sampler.eos_ids = []  # every row runs its whole budget, as plain generate below

    def ours(temperature):
        samples = asyncio.run(sampler.generate([prompt] * n, max_tokens=steps,
                                               temperature=temperature, top_p=0.9, stop=[],
                                               seed=11))
        return [s.token_ids for s in samples]

    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(5)
        plain = model.generate(torch.tensor([prompt] * n), do_sample=True, temperature=0.7,
                               top_p=0.9, top_k=None, max_new_tokens=steps, min_new_tokens=steps,
                               eos_token_id=None, pad_token_id=sampler.pad_id)[:, len(prompt):]
    plain = plain.tolist()
    same, hotter = ours(0.7), ours(1.0)
    for position in (0, steps - 1):
        reference = [row[position] for row in plain]
        assert chi_square_p([row[position] for row in same], reference) > 1e-3
        assert chi_square_p([row[position] for row in hotter], reference) < 1e-3


def test_memory_rule_splits_batches_and_keeps_order(model_and_tok, monkeypatch):
    from mtgrpo.rollout import decode

    model, tok = model_and_tok
    prompts = prompts_of(tok, "a", "a much longer question than the others", "b c", "d")
    shape = decode.ModelShape.of(model)
    assert shape.kv_bytes_per_token == 2 * 2 * 1 * 64 * 4  # 2 layers, 1 KV head of 64, fp32
    per_row = decode.generation_bytes(shape, 1, len(prompts[1]), 5)
    assert decode.generation_bytes(shape, 3, len(prompts[1]), 5) == 3 * per_row
    monkeypatch.setattr(decode, "free_device_bytes", lambda device, fraction: 2 * per_row + 1)
    sampler = TransformersSampler(model, tok, logprobs=False)
    split = generate(sampler, prompts, 5, temperature=0.0)
    assert sampler.last_batches == [2, 2]
    monkeypatch.setattr(decode, "free_device_bytes", lambda device, fraction: None)
    whole = generate(sampler, prompts, 5, temperature=0.0)
    assert sampler.last_batches == [4]
    assert [s.token_ids for s in split] == [s.token_ids for s in whole]
    assert all(s.logprobs is None for s in whole)
    direct = [generate(sampler, [p], 5, temperature=0.0)[0].token_ids for p in prompts]
    assert direct == [s.token_ids for s in whole]


@pytest.mark.slow
def test_compiled_static_decoding_is_one_graph_and_greedy_equal(model_and_tok):
    """cache="static", compile=True (the GPU switch; here inductor on CPU, about a minute to
    compile): greedy ids equal the dynamic path's, and two calls of one shape bucket reuse one
    compiled graph (no recompiles per step or per call)."""
    from torch._dynamo.utils import counters

    model, tok = model_and_tok
    prompts = prompts_of(tok, "hello there", "q")
    reference = generate(TransformersSampler(model, tok, logprobs=False), prompts, 20,
                         temperature=0.0)
    compiled = TransformersSampler(model, tok, logprobs=False, cache="static", compile=True)
    counters.clear()
    for _ in range(2):
        samples = generate(compiled, prompts, 20, temperature=0.0)
        assert [s.token_ids for s in samples] == [s.token_ids for s in reference]
    assert counters["stats"]["unique_graphs"] == 1


@pytest.mark.parametrize("setting, cache, compiled", [
    ("auto", "dynamic", False),  # CPU: auto is off (on where CUDA is available)
    ("off", "dynamic", False),
    ("on", "static", True)])
def test_the_trainer_builds_the_sampler_sampler_compile_asks_for(tiny_model_dir, tmp_path,
                                                                 setting, cache, compiled):
    """`sampler_compile` reaches the transformers sampler the trainer builds (the H200
    benchmark's fastest path, static cache + compiled forward, is `on`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mtgrpo.contract import TrainerConfig
    from mtgrpo.testing.synthetic import write_task
    from mtgrpo.trainer.paths import RunPaths
    from mtgrpo.trainer.train import build_components

    task = write_task(tmp_path / "task")
    config = TrainerConfig(model_name_or_path=str(tiny_model_dir),
                           generation_backend="transformers", sampler_compile=setting)
    paths = RunPaths(str(tiny_model_dir), task / "train.jsonl", None, task / "corpus",
                     tmp_path / "o", tmp_path / "o" / "m", tmp_path / "o" / "c")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    parts = build_components(config, paths, tokenizer, model)
    sampler = parts["sampler"]
    assert sampler.decoder.cache == cache
    assert bool(sampler.decoder.compile) is compiled


def test_a_job_decodes_every_turn_in_one_static_shape(model_and_tok):
    """min_rows + cache_length (what the trainer passes): three turns with fewer rows each
    and longer prompts use one (rows, length) shape, and sample what the per-turn buckets
    sample (greedy)."""
    model, tok = model_and_tok
    pinned = TransformersSampler(model, tok, cache="static", min_rows=4, cache_length=256)
    bucketed = TransformersSampler(model, tok, cache="static")
    first = prompts_of(tok, "a", "b question", "c", "d longer question here")
    # later turns: the episodes that go on, each with its earlier turns (200-230 tokens)
    turns = [first, [p + list(range(20, 220 + 7 * k)) for k, p in enumerate(first[:3])],
             [first[3] + list(range(30, 240))]]
    for prompts in turns:
        ours = generate(pinned, prompts, 10, temperature=0.0)
        theirs = generate(bucketed, prompts, 10, temperature=0.0)
        assert [s.token_ids for s in ours] == [s.token_ids for s in theirs]
    assert pinned.decoder.shapes == {(4, 256)}
    assert len(bucketed.decoder.shapes) == 3  # rows 4, 4, 1 and two lengths
    # A call longer than the job's cache still runs, in a bucket of its own.
    generate(pinned, prompts_of(tok, "x " * 150), 120, temperature=0.0)
    assert len(pinned.decoder.shapes) == 2


def test_the_trainer_pins_the_decode_shape_to_the_job(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mtgrpo.contract import TrainerConfig
    from mtgrpo.testing.synthetic import write_task
    from mtgrpo.trainer.paths import RunPaths
    from mtgrpo.trainer.train import build_components

    task = write_task(tmp_path / "task")
    config = TrainerConfig(model_name_or_path=str(tiny_model_dir),
                           generation_backend="transformers", sampler_compile="on",
                           per_device_train_batch_size=2, gradient_accumulation_steps=8,
                           max_prompt_length=768, max_completion_length=768)
    paths = RunPaths(str(tiny_model_dir), task / "train.jsonl", None, task / "corpus",
                     tmp_path / "o", tmp_path / "o" / "m", tmp_path / "o" / "c")
    sampler = build_components(config, paths, AutoTokenizer.from_pretrained(tiny_model_dir),
                               AutoModelForCausalLM.from_pretrained(tiny_model_dir))["sampler"]
    assert (sampler.min_rows, sampler.cache_length) == (16, 1536)


def test_later_turns_continue_the_rows_in_the_cache_instead_of_prefilling_again(model_and_tok):
    """reuse_cache (the default with a job's one decode shape): a turn whose prompts extend the
    last call's rows (prompt + sampled turn + tool result) prefills only the new tokens, in
    any order, with rows gone and rows that stopped early, and samples what a full prefill
    samples (greedy)."""
    model, tok = model_and_tok
    kwargs = dict(cache="static", min_rows=4, cache_length=256)
    reuse = TransformersSampler(model, tok, **kwargs)
    again = TransformersSampler(model, tok, reuse_cache=False, **kwargs)
    first = prompts_of(tok, "a", "b question", "c", "d longer question here")
    result = tok.encode("<|im_end|>\n<|im_start|>user\n<result> seven </result><|im_end|>\n"
                        "<|im_start|>assistant\n", add_special_tokens=False)
    prompts, budgets = first, [12, 5, 12, 9]  # rows stop at different steps
    for turn in range(3):
        ours = generate(reuse, prompts, budgets, temperature=0.0)
        theirs = generate(again, prompts, budgets, temperature=0.0)
        assert [s.token_ids for s in ours] == [s.token_ids for s in theirs], turn
        for a, b in zip(ours, theirs):
            assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) < 1e-4
        if turn:  # only each row's new tokens were prefilled: the result, and the last
            # sampled token where the turn ended at the last decode step (never fed back)
            assert 4 * len(result) <= reuse.last_prefill_tokens <= 4 * (len(result) + 1)
            assert again.last_prefill_tokens > 2 * reuse.last_prefill_tokens
        # the next turn: every other episode goes on, longest first (a new order)
        prompts = [p + s.token_ids + result for p, s in zip(prompts, ours)][::-2]
        budgets = [10] * len(prompts)
    assert reuse.decoder.shapes == again.decoder.shapes == {(4, 256)}
    # a prompt that continues no row (a new rollout) starts afresh
    fresh = generate(reuse, first[:2], 6, temperature=0.0)
    assert [s.token_ids for s in fresh] == [
        s.token_ids for s in generate(again, first[:2], 6, temperature=0.0)]


@pytest.mark.slow
def test_compiled_job_shape_continues_turns_in_one_graph(model_and_tok):
    """The trainer's GPU configuration (static cache, compiled, one shape, rows continued) on
    CPU inductor: two turns, the second continuing the first's rows, compile one graph (the
    second turn passes a mask: padding and earlier columns) and sample what the uncompiled
    full prefill samples."""
    from torch._dynamo.utils import counters

    model, tok = model_and_tok
    kwargs = dict(cache="static", min_rows=2, cache_length=128)
    compiled = TransformersSampler(model, tok, logprobs=False, compile=True, **kwargs)
    plain = TransformersSampler(model, tok, logprobs=False, reuse_cache=False, **kwargs)
    result = tok.encode("<result> seven </result>", add_special_tokens=False)
    counters.clear()
    prompts = prompts_of(tok, "hello there", "q")
    for _ in range(2):
        ours = generate(compiled, prompts, 8, temperature=0.0)
        theirs = generate(plain, prompts, 8, temperature=0.0)
        assert [s.token_ids for s in ours] == [s.token_ids for s in theirs]
        prompts = [p + s.token_ids + result for p, s in zip(prompts, ours)]
    assert compiled.last_prefill_tokens < plain.last_prefill_tokens
    assert counters["stats"]["unique_graphs"] <= 2  # with and without an attention mask
