"""Updates that are never lost in bf16 (trainer key ``master_weights``, master_weights.py).

The trainer's own model loading (``train._load_model``: bf16 weights, as on a GPU), its
``grpo_args`` and its optimizer construction (``MTGRPOTrainer.create_optimizer``) run 10 AdamW
steps at lr 1e-7 on the tiny model; the weight the optimizer holds must track an fp32 AdamW
reference that starts from the same weights and sees the same gradients. Today's path (HF's
AdamW on the bf16 weights) is the control and must be far off.
"""

from __future__ import annotations

import pytest
import torch

from mtgrpo.contract import TrainerConfig
from mtgrpo.errors import UserError
from mtgrpo.trainer import master_weights
from mtgrpo.trainer.paths import RunPaths
from mtgrpo.trainer.types import QARecord

STEPS, LR = 10, 1e-7
RECORDS = [QARecord(id="q0", question="What is the code of bravo?", aliases=("seven",))]


def _trainer(tiny_model_dir, tmp_path, setting):
    from mtgrpo.trainer.grpo_trainer import MTGRPOTrainer
    from mtgrpo.trainer.train import _load_model, grpo_args

    cfg = TrainerConfig(model_name_or_path=str(tiny_model_dir), num_generations=2,
                        per_device_train_batch_size=2, gradient_accumulation_steps=1,
                        max_steps=STEPS, eval_steps=0, learning_rate=LR, master_weights=setting,
                        liger_kernels="off")
    paths = RunPaths(str(tiny_model_dir), tmp_path / "t.jsonl", None, tmp_path, tmp_path / "o",
                     tmp_path / "m", tmp_path / "c")
    tokenizer, model = _load_model(cfg, str(tiny_model_dir), use_cuda=True)  # a GPU job's bf16
    assert next(model.parameters()).dtype == torch.bfloat16
    return MTGRPOTrainer(model, grpo_args(cfg, paths, use_cuda=False), processing_class=tokenizer,
                         config=cfg, train_records=RECORDS, rollout=lambda r: [],
                         scorer=lambda e: None)


def _gradients(params, steps, seed=0):
    """Per step and parameter: a steady direction plus noise (as in training, updates add up),
    made bf16-representable so the bf16 model and the fp32 reference see the same numbers."""
    g = torch.Generator().manual_seed(seed)
    base = [torch.randn(p.shape, generator=g) for p in params]
    return [[(b + 0.5 * torch.randn(b.shape, generator=g)).mul(1e-3).to(torch.bfloat16)
             for b in base] for _ in range(steps)]


def _run(trainer, steps=STEPS):
    """10 steps of the trainer's optimizer and of two references on the same gradients; per
    parameter tensor: (name, |w0|, the optimizer's update, the fp64 update, the fp32 update).

    The updates are effective weight minus start weight. The fp32 reference is torch's AdamW
    with the kwargs HF chose for the trainer; the fp64 one is the exact sum it rounds."""
    trainer.create_optimizer()
    optimizer = trainer.optimizer
    named = [(n, p) for n, p in trainer.model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    start = [p.detach().double().clone() for p in params]
    ref32 = [s.float().clone() for s in start]
    ref64 = [s.clone() for s in start]
    cls, kwargs = trainer.get_optimizer_cls_and_kwargs(trainer.args, trainer.model)
    reference32 = torch.optim.AdamW(ref32, **kwargs)
    reference64 = torch.optim.AdamW(ref64, **{**kwargs, "fused": False})  # no fp64 fused kernel
    for grads in _gradients(params, steps):
        for p, r32, r64, g in zip(params, ref32, ref64, grads):
            p.grad, r32.grad, r64.grad = g.clone(), g.float(), g.double()
        optimizer.step()
        reference32.step()
        reference64.step()
        optimizer.zero_grad()
    rows = []
    for (name, p), s, r32, r64 in zip(named, start, ref32, ref64):
        moved = master_weights.effective_weight(optimizer, p).double() - s
        rows.append((name, s.abs().mean().item(), moved, r64.detach() - s,
                     r32.detach().double() - s))
    return rows, optimizer


def _worst(rows, against: int, *, select=lambda name, size: True) -> float:
    """Worst relative error ||update - reference update|| / ||reference update|| over the
    selected tensors; against 3 = fp64 reference, 4 = fp32 reference."""
    return max(((r[2] - r[against]).norm() / r[against].norm()).item()
               for r in rows if select(r[0], r[1]))


FP64, FP32 = 3, 4
MATRICES = dict(select=lambda name, size: size < 0.1)  # init std 0.02; norm weights are 1.0


@pytest.mark.slow
@pytest.mark.parametrize("chunk_bytes", [master_weights.CAST_CHUNK_BYTES, 4096],
                         ids=["one-chunk", "many-chunks"])
def test_fp32_master_weights_track_an_fp32_adamw(tiny_model_dir, tmp_path, monkeypatch,
                                                 chunk_bytes):
    # many-chunks: the gradient casts run in many multi-tensor chunks (the real-size path).
    monkeypatch.setattr(master_weights, "CAST_CHUNK_BYTES", chunk_bytes)
    trainer = _trainer(tiny_model_dir, tmp_path, "fp32")
    assert trainer.master_weights.name == "fp32" and trainer.master_weights.optimizer == "master"
    rows, optimizer = _run(trainer)
    # The masters are fp32 and stepped by the same AdamW class and kwargs as the reference:
    # equal up to the order of the same fp32 operations.
    assert _worst(rows, FP32) < 1e-5
    # The bf16 model holds its masters rounded to nearest.
    for p in trainer.model.parameters():
        assert torch.equal(p.detach(), master_weights.effective_weight(optimizer, p).to(
            torch.bfloat16))
    # fp32 is itself inexact here: at |w| = 1 (norm weights) a 1e-7 update is about one fp32
    # step (2**-23), so fp32 AdamW's update is ~25% off the exact (fp64) one; at |w| ~ 0.02 it
    # is within 1%. Pinned so the bf16_kahan bound below reads against it.
    assert _worst(rows, FP64, **MATRICES) < 0.01
    assert 0.1 < _worst(rows, FP64) < 0.5


@pytest.mark.slow
def test_bf16_kahan_tracks_an_fp32_adamw(tiny_model_dir, tmp_path):
    trainer = _trainer(tiny_model_dir, tmp_path, "bf16_kahan")
    assert trainer.master_weights.name == "bf16_kahan"
    rows, optimizer = _run(trainer)
    assert type(optimizer).__module__.startswith("optimi")
    # Weight + compensation follows the exact sum. What remains is optimi keeping the Adam
    # moments in bf16 (8 significant bits: ~0.4% per element, random in sign) and, at |w| = 1,
    # the compensation's own bf16 rounding (measured 0.4% and 3.8%). Bounds: 1% on the
    # matrices against fp32 AdamW, 5% everywhere against the exact sum (fp32 AdamW is ~25% off
    # that itself on the norm weights, see above). The control below is ~100% off.
    assert _worst(rows, FP32, **MATRICES) < 0.01
    assert _worst(rows, FP64) < 0.05


@pytest.mark.slow
def test_todays_bf16_adamw_loses_the_updates(tiny_model_dir, tmp_path):
    """Control: HF's AdamW on the bf16 weights, as the trainer built it before master_weights."""
    trainer = _trainer(tiny_model_dir, tmp_path, "fp32")
    trainer.master_weights = master_weights.MasterWeights("bf16", "HF AdamW on bf16", "torch")
    rows, _ = _run(trainer)
    # Updates of ~1e-7 against bf16 steps of ~6e-5 at |w| ~ 0.02 (4e-3 at 1.0) round away.
    assert _worst(rows, FP32, **MATRICES) > 0.5
    assert _worst(rows, FP64) > 0.5


def test_master_weights_survive_a_checkpoint(tiny_model_dir, tmp_path):
    trainer = _trainer(tiny_model_dir, tmp_path, "fp32")
    _run(trainer, steps=2)
    saved = trainer.optimizer.state_dict()
    fresh = _trainer(tiny_model_dir, tmp_path, "fp32")
    with torch.no_grad():  # the checkpoint's model weights are the rounded masters
        for p, q in zip(fresh.model.parameters(), trainer.model.parameters()):
            p.copy_(q)
    fresh.create_optimizer()
    fresh.optimizer.load_state_dict(saved)
    for p, q in zip(fresh.model.parameters(), trainer.model.parameters()):
        assert torch.equal(master_weights.effective_weight(fresh.optimizer, p),
                           master_weights.effective_weight(trainer.optimizer, q))


GIB = 2 ** 30


@pytest.mark.parametrize(("setting", "kwargs", "expected"), [
    # one 24 GB A10G, Qwen2.5-1.5B: 16 B x 1.54e9 = 24.7 GB > half the card -> Kahan (15.4 GB)
    ("auto", dict(weights_bf16=True, deepspeed_stage=0, trainable_params=1_543_714_304,
                  device_bytes=24 * 10 ** 9), "bf16_kahan"),
    # one H200, Qwen3-1.7B: 27.5 GB of fp32 state in 139 GiB -> fp32
    ("auto", dict(weights_bf16=True, deepspeed_stage=0, trainable_params=1_720_574_976,
                  device_bytes=139 * GIB), "fp32"),
    ("auto", dict(weights_bf16=True, deepspeed_stage=2, trainable_params=10 ** 9,
                  device_bytes=24 * GIB), "fp32"),  # DeepSpeed's own masters
    ("auto", dict(weights_bf16=False, deepspeed_stage=0, trainable_params=0,
                  device_bytes=None), "fp32"),  # CPU / bf16 false: fp32 weights
    ("fp32", dict(weights_bf16=True, deepspeed_stage=0, trainable_params=1_543_714_304,
                  device_bytes=24 * 10 ** 9), "fp32"),  # asked for: given, even if tight
    ("bf16_kahan", dict(weights_bf16=True, deepspeed_stage=0, trainable_params=10 ** 6,
                        device_bytes=139 * GIB), "bf16_kahan"),
])
def test_resolve_rule(setting, kwargs, expected):
    assert master_weights.resolve(setting, **kwargs).name == expected


def test_bf16_kahan_under_deepspeed_is_refused_in_one_line():
    with pytest.raises(UserError) as err:
        master_weights.resolve("bf16_kahan", weights_bf16=True, deepspeed_stage=3,
                               trainable_params=10 ** 9, device_bytes=80 * GIB)
    (line,) = err.value.lines()
    assert "trainer.master_weights" in line and "ZeRO-3" in line


def test_config_key_is_validated():
    with pytest.raises(UserError) as err:
        TrainerConfig.from_mapping({"model_name_or_path": "m", "master_weights": "fp16"},
                                   source="r.yaml")
    assert "trainer.master_weights" in str(err.value) and "bf16_kahan" in str(err.value)


def test_gradient_casts_run_in_bounded_chunks_covering_every_parameter(monkeypatch):
    monkeypatch.setattr(master_weights, "CAST_CHUNK_BYTES", 1000)
    masters = [torch.zeros(n) for n in (10, 300, 5, 200, 1, 400)]  # 4 bytes each
    pairs = [(object(), m) for m in masters]
    chunks = list(master_weights._chunks(pairs))
    assert [pair for chunk in chunks for pair in chunk] == pairs  # all, once, in order
    sizes = [sum(m.numel() * 4 for _, m in chunk) for chunk in chunks]
    # A chunk closes once it reaches the bound, so it exceeds it by less than its last tensor.
    assert sizes == [1240, 2424] and all(s - 4 * c[-1][1].numel() < 1000
                                         for s, c in zip(sizes, chunks))
