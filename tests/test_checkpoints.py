"""Checkpoints: the commit protocol, complete-only resume, SIGTERM saves, and that a stopped and
resumed HF Trainer run ends exactly where an uninterrupted one does (weights, optimizer,
scheduler, RNG and data position all restored), with metrics numbered once each."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from mtgrpo.sagemaker.checkpoints import (MARKER_DIR, METRICS_COPY, StopRequest,
                                          TrainingInterrupted, commit, is_complete,
                                          latest_complete_checkpoint, list_checkpoints,
                                          prepare_resume)


def fake_checkpoint(root: Path, step: int, files=("model.safetensors", "rng_state_0.pth")):
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    for name in files:
        (path / name).write_bytes(b"w" * (step + 10))
    return path


def test_commit_lists_files_and_sizes(tmp_path):
    ckpt = fake_checkpoint(tmp_path, 4)
    assert not is_complete(ckpt)
    marker = commit(ckpt, node=0, num_nodes=1, step=4)
    body = json.loads(marker.read_text())
    assert marker.name == "node-00000.json" and marker.parent.name == MARKER_DIR
    assert body["files"] == {"model.safetensors": 14, "rng_state_0.pth": 14}
    assert not list(marker.parent.glob("*.tmp"))
    assert is_complete(ckpt)
    (ckpt / "model.safetensors").write_bytes(b"w")  # truncated after the commit (S3 restore)
    assert not is_complete(ckpt)


def test_every_node_must_commit(tmp_path):
    ckpt = fake_checkpoint(tmp_path, 2)
    commit(ckpt, node=0, num_nodes=2, step=2)
    assert not is_complete(ckpt)
    (ckpt / "global_step2").mkdir()
    (ckpt / "global_step2" / "zero_pp_rank_8_mp_rank_00_optim_states.pt").write_bytes(b"o")
    commit(ckpt, node=1, num_nodes=2, step=2)
    assert is_complete(ckpt)


def test_prepare_resume_drops_incomplete_and_restores_metrics(tmp_path):
    ckpts, metrics = tmp_path / "checkpoints", tmp_path / "data" / "metrics.jsonl"
    good = fake_checkpoint(ckpts, 2)
    (good / METRICS_COPY).write_text('{"step": 1}\n{"step": 2}\n')
    commit(good, node=0, num_nodes=1, step=2)
    fake_checkpoint(ckpts, 10)  # half-written: no marker
    fake_checkpoint(ckpts, 3)
    metrics.parent.mkdir()
    metrics.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n')  # logged past the checkpoint
    assert latest_complete_checkpoint(ckpts) == good
    assert prepare_resume(ckpts, metrics) == good
    assert [s for s, _ in list_checkpoints(ckpts)] == [2]
    assert metrics.read_text() == '{"step": 1}\n{"step": 2}\n'


def test_prepare_resume_without_checkpoint_starts_metrics_over(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 1}\n')
    fake_checkpoint(tmp_path / "checkpoints", 1)
    assert prepare_resume(tmp_path / "checkpoints", metrics) is None
    assert not metrics.exists() and list_checkpoints(tmp_path / "checkpoints") == []


def test_stop_request_from_file_or_signal(tmp_path):
    stop = StopRequest(tmp_path / "stop")
    assert not stop.requested()
    (tmp_path / "stop").touch()
    assert stop.requested()
    stop = StopRequest()
    previous = signal.getsignal(signal.SIGTERM)
    try:
        stop.install_handler()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested()
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- a real HF Trainer: stop, resume, compare ---------------------------------------------------

MAX_STEPS = 6


def _trainer(model_dir: Path, out: Path, callbacks):
    import torch
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    gen = torch.Generator().manual_seed(0)
    data = [{"input_ids": ids, "labels": ids}
            for ids in torch.randint(5, 200, (24, 12), generator=gen)]
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"), max_steps=MAX_STEPS, save_steps=2,
        save_total_limit=5, per_device_train_batch_size=2, learning_rate=1e-2,
        lr_scheduler_type="linear", warmup_steps=2, logging_steps=1, seed=0, data_seed=0,
        use_cpu=True, report_to="none", disable_tqdm=True, save_strategy="steps")
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    return Trainer(model=model, args=args, train_dataset=data, callbacks=callbacks)


def _callbacks(out: Path, stop: StopRequest, extra=()):
    from mtgrpo.sagemaker.callback import CheckpointCallback
    from mtgrpo.trainer.metrics_log import MetricsLogger

    metrics = out / "data" / "metrics.jsonl"
    return [MetricsLogger(metrics), *extra, CheckpointCallback(stop, metrics_file=metrics,
                                                               node_rank=0, num_nodes=1)]


@pytest.mark.slow
def test_stopped_and_resumed_run_matches_uninterrupted(tiny_model_dir, tmp_path):
    import torch
    from transformers import TrainerCallback

    from mtgrpo.trainer.metrics_log import read_metrics
    from mtgrpo.trainer.train import newest_complete_checkpoint

    straight = _trainer(tiny_model_dir, tmp_path / "a", _callbacks(tmp_path / "a", StopRequest()))
    straight.train()
    reference = {k: v.clone() for k, v in straight.model.state_dict().items()}

    class SigtermAt(TrainerCallback):  # what SageMaker does to the container mid-run
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                os.kill(os.getpid(), signal.SIGTERM)

    out = tmp_path / "b"
    stop = StopRequest()
    previous = signal.getsignal(signal.SIGTERM)
    try:
        stop.install_handler()
        first = _trainer(tiny_model_dir, out, _callbacks(out, stop, [SigtermAt()]))
        with pytest.raises(TrainingInterrupted) as interrupted:
            first.train()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert interrupted.value.step == 3  # saved at the step it was at, not at save_steps
    ckpts = out / "checkpoints"
    assert is_complete(ckpts / "checkpoint-3")
    assert (ckpts / "checkpoint-3" / "rng_state.pth").is_file()
    # A crash after the stop checkpoint: a half-written newer one and a metrics line past it.
    fake_checkpoint(ckpts, 4)
    with (out / "data" / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": 4, "loss": 9.0}) + "\n")

    resumed_from = prepare_resume(ckpts, out / "data" / "metrics.jsonl")
    assert resumed_from == ckpts / "checkpoint-3"
    assert newest_complete_checkpoint(ckpts) == resumed_from  # what train.run will resume
    second = _trainer(tiny_model_dir, out, _callbacks(out, StopRequest()))
    second.train(resume_from_checkpoint=str(resumed_from))

    assert second.state.global_step == MAX_STEPS
    for name, tensor in second.model.state_dict().items():
        torch.testing.assert_close(tensor, reference[name], rtol=1e-5, atol=1e-6, msg=name)
    steps = [r["step"] for r in read_metrics(out / "data" / "metrics.jsonl")]
    assert steps == list(range(1, MAX_STEPS + 1))
    expected = [r["loss"] for r in read_metrics(tmp_path / "a" / "data" / "metrics.jsonl")]
    resumed = [r["loss"] for r in read_metrics(out / "data" / "metrics.jsonl")]
    assert resumed == pytest.approx(expected, rel=1e-4)
