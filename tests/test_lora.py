"""LoRA (peft) as a trainer option, on the tiny model (CPU): the config keys, what trains, the
merged weights every rollout path and the final model get, checkpoints and resume, gradient
checkpointing. The vLLM on-policy check with LoRA is in tests/test_on_policy.py."""

from __future__ import annotations

import asyncio
import json

import pytest
import torch

from mtgrpo.contract import TrainerConfig
from mtgrpo.errors import UserError
from mtgrpo.trainer.paths import RunPaths
from mtgrpo.trainer.types import RewardBreakdown

pytest.importorskip("peft")


def _config(tiny_model_dir, **changes):
    values = dict(model_name_or_path=str(tiny_model_dir), lora_r=4, lora_alpha=8,
                  deepspeed_stage=0)
    values.update(changes)
    return TrainerConfig(**values)


def _lora_model(tiny_model_dir, **changes):
    from transformers import AutoModelForCausalLM

    from mtgrpo.trainer.lora import apply_lora

    torch.manual_seed(0)  # the same adapters every call
    model = apply_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                       _config(tiny_model_dir, **changes))
    with torch.no_grad():  # fresh adapters are a no-op (B = 0): give them a visible effect
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.05)
    return model


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].float()


IDS = [3, 17, 40, 99, 250, 7, 512, 33]


# -- config ---------------------------------------------------------------------------------------

def test_lora_keys_round_trip_through_hyperparameters(tiny_model_dir):
    cfg = _config(tiny_model_dir, lora_r=16, lora_alpha=64, lora_dropout=0.05,
                  lora_target_modules="q_proj, v_proj")
    hp = cfg.to_hyperparameters()
    assert (hp["lora_r"], hp["lora_alpha"], hp["lora_dropout"], hp["lora_target_modules"]) == (
        "16", "64", "0.05", "q_proj, v_proj")
    assert TrainerConfig.from_hyperparameters(hp) == cfg
    off = TrainerConfig(model_name_or_path="m")
    assert (off.lora_r, off.lora_alpha, off.lora_dropout, off.lora_target_modules) == (
        0, 32, 0.0, "all-linear")


def test_bad_lora_settings_are_one_line_errors_all_at_once():
    with pytest.raises(UserError) as info:
        TrainerConfig.from_mapping({"model_name_or_path": "m", "lora_r": -1, "lora_dropout": 1.0,
                                    "lora_alpha": 0, "lora_target_modules": "q_proj,,v_proj"},
                                   source="r.yaml")
    lines = str(info.value).splitlines()
    assert len(lines) == 4 and all(line.startswith("r.yaml: trainer.lora_") for line in lines)
    with pytest.raises(UserError) as info:
        TrainerConfig.from_mapping({"model_name_or_path": "m", "lora_r": 8,
                                    "lora_target_modules": "q_proj,,v_proj"}, source="r.yaml")
    assert str(info.value).splitlines() == [
        "r.yaml: trainer.lora_target_modules: invalid value 'q_proj,,v_proj' (allowed: "
        "all-linear, or comma-separated module names such as q_proj,v_proj)",
        "r.yaml: trainer.deepspeed_stage: DeepSpeed ZeRO-2 with LoRA (lora_r 8) is not "
        "supported (allowed: deepspeed_stage: 0 with lora_r > 0 (or lora_r: 0))"]
    TrainerConfig(model_name_or_path="m", lora_r=0, deepspeed_stage=3)  # full fine-tune: fine


def test_unknown_or_unservable_target_modules_are_user_errors(tiny_model_dir):
    with pytest.raises(UserError, match=r"trainer.lora_target_modules: 'qkv'.*not found.*"
                                        r"allowed: all-linear, or some of: down_proj,gate_proj"):
        _lora_model(tiny_model_dir, lora_target_modules="qkv")
    with pytest.raises(UserError, match="non-linear modules .*embed_tokens"):
        _lora_model(tiny_model_dir, lora_target_modules="embed_tokens")
    with pytest.raises(UserError, match="LM head is tied"):
        _lora_model(tiny_model_dir, lora_target_modules="q_proj,lm_head")


# -- the merged policy ----------------------------------------------------------------------------

def test_only_adapters_train_and_the_merged_policy_is_the_adapted_one(tiny_model_dir, tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    from mtgrpo.rollout.policy_weights import policy_tensors, save_policy

    model = _lora_model(tiny_model_dir)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    # all-linear: every projection of both layers, not the (tied) LM head
    assert len(trainable) == 2 * 2 * 7
    with safe_open(str(tiny_model_dir / "model.safetensors"), "pt") as f:
        checkpoint_names = sorted(f.keys())
    assert sorted(n for n, _ in policy_tensors(model)) == checkpoint_names

    save_policy(model, tmp_path / "merged")
    assert not any(getattr(m, "merged", False) for m in model.modules())  # still training
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.eval()
    adapted = _logits(model, IDS)
    assert (adapted - _logits(base, IDS)).abs().max() > 0.1  # the adapters matter ...
    assert torch.allclose(_logits(merged, IDS), adapted, atol=1e-4)  # ... and are merged in
    # peft's own (in-place) merge gives the same weights
    reference = dict(_lora_model(tiny_model_dir).merge_and_unload().named_parameters())
    for name, tensor in policy_tensors(model):
        assert torch.allclose(tensor, reference[name], atol=1e-6), name


def test_nccl_source_sends_merged_weights_under_checkpoint_names(tiny_model_dir):
    from mtgrpo.rollout.policy_weights import policy_tensors
    from mtgrpo.rollout.weight_sync import cast_source

    model = _lora_model(tiny_model_dir)
    source = cast_source(model, torch.bfloat16)
    meta, pairs = source.metadata(), list(source)
    assert [m.name for m in meta] == [n for n, _ in pairs]
    assert not any("lora_" in m.name or "base_layer" in m.name for m in meta)
    assert all(t.dtype == torch.bfloat16 and tuple(t.shape) == m.shape
               for m, (_, t) in zip(meta, pairs))
    expected = dict(policy_tensors(model))
    assert all(torch.equal(t, expected[n].to(torch.bfloat16)) for n, t in pairs)
    assert list(source) and [n for n, _ in source] == [m.name for m in meta]  # re-iterable


def test_transformers_sampler_samples_the_adapted_policy(tiny_model_dir):
    from transformers import AutoTokenizer

    from mtgrpo.rollout import TransformersSampler

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = _lora_model(tiny_model_dir)
    model.train()
    prompt = tok.encode("<|im_start|>user\nWhat is the code?<|im_end|>\n<|im_start|>assistant\n",
                        add_special_tokens=False)
    [sample] = asyncio.run(TransformersSampler(model, tok).generate(
        [prompt], max_tokens=8, temperature=1.0, top_p=1.0, stop=[], seed=1))
    assert model.training  # put back as it was
    model.eval()
    ids = prompt + sample.token_ids
    policy = torch.log_softmax(_logits(model, ids)[len(prompt) - 1:-1], -1).gather(
        -1, torch.tensor(sample.token_ids)[:, None])[:, 0]
    assert max(abs(a - b) for a, b in zip(sample.logprobs, policy.tolist())) < 1e-4


def test_sampler_runs_a_lora_policy_from_merged_weights_refreshed_after_each_update(
        tiny_model_dir):
    from transformers import AutoTokenizer

    from mtgrpo.rollout import TransformersSampler

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = _lora_model(tiny_model_dir)
    base_before = {n: p.detach().clone() for n, p in model.named_parameters()
                   if "lora_" not in n}
    prompt = tok.encode("<|im_start|>user\nWhat is the code?<|im_end|>\n<|im_start|>assistant\n",
                        add_special_tokens=False)
    sampler = TransformersSampler(model, tok)
    unmerged = TransformersSampler(model, tok, merge_lora=False)

    def sample(s):
        [out] = asyncio.run(s.generate([prompt], max_tokens=8, temperature=1.0, top_p=1.0,
                                       stop=[], seed=1))
        return out

    merged, through_adapters = sample(sampler), sample(unmerged)
    assert sampler.last_sync_seconds > 0 and unmerged.last_sync_seconds == 0
    plain = sampler._merged.model
    assert type(plain).__name__ == type(model.get_base_model()).__name__  # no peft wrappers
    assert not any("lora_" in n for n, _ in plain.named_parameters())
    # Only the adapted weights are copies; embeddings and norms are the policy's own tensors.
    shared = {id(p) for p in model.parameters()}
    embed = plain.get_input_embeddings().weight
    assert id(embed) in shared and plain.get_output_embeddings().weight is embed
    assert id(plain.model.layers[0].self_attn.q_proj.weight) not in shared
    assert merged.token_ids == through_adapters.token_ids
    assert max(abs(a - b) for a, b in zip(merged.logprobs, through_adapters.logprobs)) < 1e-4
    # No refresh while the adapters are unchanged; one after an (in-place) update.
    assert not sampler._merged.refresh()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.mul_(3.0)
    buffer = plain.model.layers[0].self_attn.q_proj.weight
    address = buffer.data_ptr()
    sample(sampler)
    assert buffer.data_ptr() == address  # refreshed in place: a captured graph stays valid
    model.eval()
    ids = prompt + list(range(5, 12))
    assert torch.allclose(_logits(plain, ids), _logits(model, ids), atol=1e-4)
    # The training model was never merged in place.
    assert all(torch.equal(p, base_before[n]) for n, p in model.named_parameters()
               if "lora_" not in n)


def test_a_merged_copy_too_large_for_the_gpu_falls_back_to_the_adapters(tiny_model_dir,
                                                                        monkeypatch):
    from transformers import AutoTokenizer

    from mtgrpo.rollout import TransformersSampler
    from mtgrpo.rollout import policy_weights

    assert policy_weights.merge_fits(15, 100) and not policy_weights.merge_fits(16, 100)
    assert policy_weights.merge_fits(10 ** 12, None)  # CPU: always
    monkeypatch.setattr(policy_weights, "merge_fits", lambda merged, gpu: False)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = _lora_model(tiny_model_dir)
    sampler = TransformersSampler(model, tok)
    prompt = tok.encode("<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n",
                        add_special_tokens=False)
    asyncio.run(sampler.generate([prompt], max_tokens=4, temperature=1.0, top_p=1.0, stop=[],
                                 seed=1))
    assert sampler._merged is None and not sampler.merge_lora
    assert sampler.last_sync_seconds == 0


# -- a training run -------------------------------------------------------------------------------

def _parity_reward(episode) -> RewardBreakdown:
    """Varies within a group even for a random model, so the adapters get gradients."""
    ids = [i for t in episode.turns if t.role == "assistant" for i in t.token_ids]
    return RewardBreakdown(turn=0.0, outcome=sum(i % 2 == 0 for i in ids) / max(len(ids), 1),
                           components={"exact_match": 0.0})


def _run_config(tiny_model_dir, tmp_path, **changes):
    from mtgrpo.testing.synthetic import write_task

    task = write_task(tmp_path / "task")
    values = dict(generation_backend="transformers", num_generations=4,
                  per_device_train_batch_size=4, gradient_accumulation_steps=1, max_steps=2,
                  learning_rate=1e-2, max_grad_norm=1.0, eval_steps=0, save_steps=1,
                  save_total_limit=5, max_turns=2, max_tool_calls=1, max_tokens_per_turn=12,
                  max_completion_length=64, search_max_tokens=16, temperature=1.0, seed=1)
    cfg = _config(tiny_model_dir, **{**values, **changes})
    out = tmp_path / "out"
    paths = RunPaths(str(tiny_model_dir), task / "train.jsonl", None, task / "corpus", out,
                     out / "model", out / "checkpoints")
    return cfg, paths


def _adapters(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


@pytest.mark.slow
def test_run_trains_adapters_saves_merged_model_and_resumes(tiny_model_dir, tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from mtgrpo.testing.synthetic import task_parser
    from mtgrpo.trainer.train import newest_complete_checkpoint, run

    cfg, paths = _run_config(tiny_model_dir, tmp_path, max_steps=3)
    seen = {}

    def on_trainer(trainer):
        seen["trainer"] = trainer

    class StopAfterSecondStep(TrainerCallback):
        def bind(self, trainer):
            self.trainer = trainer

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            seen["start"] = _adapters(model)
            seen["base"] = {n: p.detach().clone() for n, p in model.named_parameters()
                            if "lora_" not in n}

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 1:
                self.trainer.request_save_and_stop()  # as a SIGTERM handler would

        def on_step_end(self, args, state, control, model=None, **kwargs):
            seen["optimized"] = {id(p) for g in self.trainer.optimizer.param_groups
                                 for p in g["params"]}
            seen["after"] = _adapters(model)

    first = run(cfg, paths, parser=task_parser(), scorer=_parity_reward,
                callbacks=[StopAfterSecondStep()], on_trainer=on_trainer)
    assert first["stopped_early"] and first["global_step"] == 2
    model = seen["trainer"].accelerator.unwrap_model(seen["trainer"].model)
    lora_params = {id(p) for n, p in model.named_parameters() if "lora_" in n}
    assert seen["optimized"] == lora_params  # the optimizer holds the adapters, nothing else
    moved = [n for n in seen["start"] if not torch.equal(seen["start"][n], seen["after"][n])]
    assert any(".lora_B." in n for n in moved)
    assert all(torch.equal(p, seen["base"][n]) for n, p in model.named_parameters()
               if "lora_" not in n)  # the base stays frozen

    # The checkpoint holds the adapter and its optimizer state, not the base weights.
    checkpoint = newest_complete_checkpoint(paths.checkpoint_dir)
    files = {p.name for p in checkpoint.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "optimizer.pt"} <= files
    assert "model.safetensors" not in files
    with safe_open(str(checkpoint / "adapter_model.safetensors"), "pt") as f:
        saved_b = {k: f.get_tensor(k) for k in f.keys() if "lora_B" in k}
    assert saved_b and all(v.abs().sum() > 0 for v in saved_b.values())

    resumed = {}

    class Capture(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            resumed["start"] = _adapters(model)

    second = run(cfg, paths, parser=task_parser(), scorer=_parity_reward, callbacks=[Capture()],
                 on_trainer=on_trainer)
    assert second["resumed_from"] == str(checkpoint) and second["global_step"] == 3
    # The second run starts from the adapter the first one trained, not from fresh ones ...
    assert resumed["start"].keys() == seen["after"].keys()
    assert all(torch.equal(resumed["start"][n], seen["after"][n]) for n in seen["after"])
    # ... and its step moved it on.
    trained = _adapters(seen["trainer"].accelerator.unwrap_model(seen["trainer"].model))
    assert any(not torch.equal(trained[n], seen["after"][n]) for n in trained)

    # The final model: merged full weights + tokenizer (vLLM / transformers), adapter beside it.
    model_dir = paths.model_dir
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {
        p.name for p in model_dir.iterdir()}
    assert (model_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((model_dir / "adapter" / "adapter_config.json").read_text())["r"] == 4
    loaded = AutoModelForCausalLM.from_pretrained(model_dir)
    AutoTokenizer.from_pretrained(model_dir)
    final = seen["trainer"].accelerator.unwrap_model(seen["trainer"].model)
    final.eval()
    assert torch.allclose(_logits(loaded, IDS), _logits(final, IDS), atol=1e-4)
    assert not torch.allclose(_logits(loaded, IDS), _logits(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), IDS), atol=1e-3)


@pytest.mark.slow
def test_gradient_checkpointing_trains_the_adapters(tiny_model_dir, tmp_path):
    """On CPU the run turns checkpointing off (grpo_args); here it is forced on (reentrant), for
    one optimizer step through TRL's peft path (``enable_input_require_grads``)."""
    from transformers import AutoTokenizer, TrainerCallback

    from mtgrpo.testing.synthetic import task_parser
    from mtgrpo.trainer import train

    cfg, paths = _run_config(tiny_model_dir, tmp_path, max_steps=1, gradient_checkpointing=True)
    real_args = train.grpo_args
    seen = {}

    def args_with_checkpointing(*a, **k):
        args = real_args(*a, **k)
        args.gradient_checkpointing = True
        # Reentrant checkpointing (TRL forces it with ZeRO-3; older transformers default to it)
        # gives the adapters no gradient unless the inputs require grad: the case TRL's
        # enable_input_require_grads exists for.
        args.gradient_checkpointing_kwargs = {"use_reentrant": True}
        return args

    class Watch(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            seen["start"] = _adapters(model)
            seen["checkpointing"] = model.get_base_model().is_gradient_checkpointing

        def on_step_end(self, args, state, control, model=None, **kwargs):
            seen["after"] = _adapters(model)

    train.grpo_args = args_with_checkpointing
    try:
        summary = train.run(cfg, paths, parser=task_parser(), scorer=_parity_reward,
                            callbacks=[Watch()])
    finally:
        train.grpo_args = real_args
    assert summary["global_step"] == 1 and seen["checkpointing"]
    assert any(not torch.equal(seen["start"][n], seen["after"][n])
               for n in seen["start"] if ".lora_B." in n)
    AutoTokenizer.from_pretrained(paths.model_dir)


def test_both_logprob_paths_agree_on_the_lora_policy(tiny_model_dir, tmp_path):
    """The padding-free path (on on GPUs, fast_logprobs.py) reaches the base model through the
    peft wrapper: it must give TRL's padded path's log-probs, adapters included."""
    from transformers import AutoTokenizer

    from mtgrpo.trainer.grpo_trainer import MTGRPOTrainer
    from mtgrpo.trainer.train import grpo_args
    from mtgrpo.trainer.types import Episode, QARecord, Turn

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    record = QARecord(id="q0", question="What is the code of bravo?", aliases=("seven",))
    prompt = tok.encode("<|im_start|>user\nWhat is the code of bravo?<|im_end|>\n"
                        "<|im_start|>assistant\n")
    episodes = [Episode(record=record, prompt_ids=list(prompt), turns=[
        Turn("assistant", "", ids, [-1.0] * len(ids))])
        for ids in (tok.encode("<answer> seven </answer><|im_end|>"), tok.encode("<answer> x"))]
    cfg = _config(tiny_model_dir, num_generations=2, per_device_train_batch_size=2,
                  gradient_accumulation_steps=1, max_steps=1, eval_steps=0)
    paths = RunPaths(str(tiny_model_dir), tmp_path / "t.jsonl", None, tmp_path,
                     tmp_path / "out", tmp_path / "model", tmp_path / "ckpt")
    model = _lora_model(tiny_model_dir)
    trainer = MTGRPOTrainer(model, grpo_args(cfg, paths), processing_class=tok, config=cfg,
                            train_records=[record], rollout=lambda recs: episodes[:len(recs)],
                            scorer=_parity_reward)
    trainer.current_gradient_accumulation_steps = 1
    batch = trainer._generate_and_score_completions([{"prompt": "0"}, {"prompt": "0"}])
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    width = batch["completion_ids"].size(1)
    out = {}
    for packed in (False, True):
        trainer.packed_logprobs = packed
        with torch.no_grad():
            out[packed] = trainer._get_per_token_logps_and_entropies(
                trainer.model, ids, mask, width)[0] * batch["completion_mask"]
    assert torch.allclose(out[True], out[False], atol=1e-4)
    model.eval()
    first = _logits(model, list(prompt) + episodes[0].turns[0].token_ids)
    expected = torch.log_softmax(first[len(prompt) - 1:-1] / cfg.temperature, -1).gather(
        -1, torch.tensor(episodes[0].turns[0].token_ids)[:, None])[:, 0]
    n = len(expected)
    assert torch.allclose(out[True][0, :n], expected, atol=1e-4)  # the adapted policy's


@pytest.mark.slow
def test_with_beta_the_reference_adapter_stays_frozen_and_unpushed(tiny_model_dir, tmp_path):
    """beta > 0: TRL adds a frozen copy of the initial adapter ("ref") as the reference; only
    "default" trains, and the merged weights carry "default" alone."""
    from transformers import TrainerCallback

    from mtgrpo.rollout.policy_weights import policy_parameters, policy_tensors
    from mtgrpo.testing.synthetic import task_parser
    from mtgrpo.trainer.train import run

    cfg, paths = _run_config(tiny_model_dir, tmp_path, beta=0.04, max_steps=2)
    seen = {}

    class Watch(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            seen["start"] = _adapters(model)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            seen["model"] = model
            seen["after"] = _adapters(model)

    run(cfg, paths, parser=task_parser(), scorer=_parity_reward, callbacks=[Watch()])
    names = {n.split(".")[-2] for n in seen["start"]}
    moved = {n.split(".")[-2] for n in seen["start"]
             if not torch.equal(seen["start"][n], seen["after"][n])}
    assert (names, moved) == ({"default", "ref"}, {"default"})
    model = seen["model"]
    layers = {n: layer for n, _, layer in policy_parameters(model)}
    for name, tensor in policy_tensors(model):
        layer = layers[name]
        if layer is not None:
            base = layer.get_base_layer().weight
            expected = base.detach().float() + layer.get_delta_weight("default").float()
            assert torch.allclose(tensor, expected.to(base.dtype), atol=1e-6), name
