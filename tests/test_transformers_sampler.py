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
