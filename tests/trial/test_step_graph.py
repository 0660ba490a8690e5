"""The CUDA-graph training step (``cuda_graph``) computes what the eager step computes: the same losses per step
for both stages; on CPU (and wherever it cannot capture) it falls back to the eager step with one log line."""

import copy
import logging
import math

import pytest
import torch
from trial_testlib import STAGE_SEQ, saved_bytes, stage_batches, stage_student, stage_val

from lolsearch.attention.layer import DistillRecorder
from lolsearch.config import (
    DistillConfig,
    FinetuneConfig,
    LoraOptions,
    parse_trial_config,
)
from lolsearch.trial.distill import layer_losses, run_distill
from lolsearch.trial.finetune import add_lora, run_finetune
from lolsearch.trial.speed import check_fast_path
from lolsearch.trial.surgery import attention_parameters
from lolsearch.trial.train import run_stage

SEQ = STAGE_SEQ
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _both_stages(model, tok, device: str = "cpu", **speed) -> tuple[list[float], list[float], list[float], list[float]]:
    """Distill then LoRA, 5 steps each (2 micro-batches a step, clipping, cosine lr, a validation every 2 steps);
    returns both stages' losses and both stages' validation losses."""
    torch.manual_seed(0)
    common = {"steps": 5, "batch_size": 2, "grad_accum": 2, "grad_clip": 1.0, "schedule": "cosine", "warmup_steps": 2,
              "eval_every": 2, "eval_batches": 1, "sync_every": 2, **speed}
    stage, _ = run_distill(model, DistillConfig(**common), stage_batches(tok, 1, device), stage_val(tok, device), SEQ)
    peft = add_lora(model, LoraOptions(rank=2), cotrain_attention=False)
    ft = run_finetune(peft, FinetuneConfig(**common, lr=1e-3), stage_batches(tok, 2, device), stage_val(tok, device), SEQ)
    return ([p["loss"] for p in stage.curve], [p["loss"] for p in ft.curve],
            [p["eval_loss"] for p in stage.eval_curve], [p["eval_loss"] for p in ft.eval_curve])


def test_cuda_graph_on_cpu_falls_back_with_one_log_line_and_the_same_losses(caplog):
    model, tok = stage_student()
    twin = copy.deepcopy(model)
    eager = _both_stages(model, tok, cuda_graph=False)
    with caplog.at_level(logging.INFO, logger="lolsearch.trial.train"):
        graphed = _both_stages(twin, tok, cuda_graph=True)
    assert graphed == eager  # on CPU the option changes nothing, bit for bit
    lines = [r.getMessage() for r in caplog.records if "cuda_graph off" in r.getMessage()]
    assert lines == ["distill: cuda_graph off (the parameters are not on a CUDA device); running eager steps",
                     "finetune: cuda_graph off (the parameters are not on a CUDA device); running eager steps"]


def test_cuda_graph_is_a_speed_setting_outside_the_trial_id():
    base = parse_trial_config({})
    fast = parse_trial_config({"distill": {"cuda_graph": True}, "finetune": {"cuda_graph": True}})
    assert fast.trial_id == base.trial_id and fast.distill.cuda_graph is True and base.finetune.cuda_graph == "auto"


def _close(a: list[float], b: list[float], rel: float = 1e-3) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=rel, abs_tol=1e-5) for x, y in zip(a, b, strict=True))


@pytest.mark.gpu
@cuda
def test_graphed_steps_reproduce_the_eager_losses_on_cuda(caplog, monkeypatch):
    """Steps and validations: each stage's three validations (one batch each) warm up, capture and replay one
    graph, and give the eager validation losses."""
    from lolsearch.trial.forward_graph import GraphedForward

    model, tok = stage_student("cuda")
    twin = copy.deepcopy(model)
    eager = _both_stages(model, tok, "cuda", cuda_graph=False)
    captures, capture = [], GraphedForward._capture
    monkeypatch.setattr(GraphedForward, "_capture", lambda self, inputs: captures.append(self.name) or capture(self, inputs))
    with caplog.at_level(logging.INFO):
        graphed = _both_stages(twin, tok, "cuda", cuda_graph=True)
    captured = [r.getMessage() for r in caplog.records if "captured as a CUDA graph" in r.getMessage()]
    assert len(captured) == 2, [r.getMessage() for r in caplog.records]  # both stages replayed a graph
    assert not [r for r in caplog.records if "cuda_graph off" in r.getMessage()]
    assert captures == ["distill validation", "validation"]
    for a, b in zip(eager, graphed, strict=True):
        assert _close(a, b), (a, b)
    assert all(p.grad is None for p in twin.parameters())  # the graph's pool is released with the stage


@pytest.mark.gpu
@cuda
def test_check_fast_path_compares_the_graphed_step_with_eager_on_cuda():
    model, tok = stage_student("cuda")
    params = attention_parameters(model)
    recorder = DistillRecorder()

    def loss_fn(batch: dict) -> torch.Tensor:
        _, mse, _ = layer_losses(model, batch, recorder)
        return 1000 * sum(mse) / len(mse)

    model.train()
    got = check_fast_path("distill", params, loss_fn, lambda: stage_batches(tok, 3, "cuda"),
                          DistillConfig(steps=4, batch_size=2, cuda_graph=True), SEQ, steps=4)
    assert len(got["fast"]) == 4 and got["max_rel_diff"] < 1e-3, got


@pytest.mark.gpu
@cuda
def test_a_host_sync_or_a_new_batch_shape_falls_back_to_eager_on_cuda(caplog):
    w = torch.nn.Parameter(torch.ones(4, device="cuda"))

    def synced(batch: dict) -> torch.Tensor:
        loss = (w * batch["x"]).square().mean()
        return loss * (1.0 if loss.item() >= 0 else 0.0)  # a host read inside the step: cannot be captured

    def plain(batch: dict) -> torch.Tensor:
        return (w * batch["x"]).square().mean()

    def batches(shapes):
        for i, n in enumerate(shapes):
            yield {"input_ids": torch.zeros(1, n, dtype=torch.long, device="cuda"),
                   "x": torch.full((n, 4), 1.0 + i, device="cuda")}

    cfg = DistillConfig(steps=4, lr=0.1, sync_every=1, keep_best=False, cuda_graph=False)
    for loss_fn, shapes, why in ((synced, [3, 3, 3, 3], "capture failed"), (plain, [3, 3, 3, 2], "another shape")):
        with torch.no_grad():
            w.fill_(1.0)
        eager = run_stage("s", [w], loss_fn, batches(shapes), cfg, 4).curve
        with torch.no_grad():
            w.fill_(1.0)
        caplog.clear()
        with caplog.at_level(logging.INFO):
            graphed = run_stage("s", [w], loss_fn, batches(shapes), cfg.model_copy(update={"cuda_graph": True}), 4).curve
        assert _close([p["loss"] for p in eager], [p["loss"] for p in graphed])
        assert [r for r in caplog.records if "cuda_graph off" in r.getMessage() and why in r.getMessage()], why
        torch.randn(8, device="cuda")  # random ops still run after a failed capture (the generator is not left capturing)


def test_cuda_graph_auto_graphs_short_micro_batches_only():
    from lolsearch.config.sections import AUTO_GRAPH_TOKENS, StageConfig

    auto = StageConfig(steps=4, batch_size=8)
    assert auto.cuda_graph == "auto"
    assert auto.graph_wanted(AUTO_GRAPH_TOKENS // 8)
    assert not auto.graph_wanted(AUTO_GRAPH_TOKENS // 8 + 1)
    assert StageConfig(steps=4, batch_size=8, cuda_graph=True).graph_wanted(4 * AUTO_GRAPH_TOKENS)
    assert not StageConfig(steps=4, batch_size=1, cuda_graph=False).graph_wanted(16)


def test_cuda_graph_auto_on_cpu_runs_eager_without_a_log_line(caplog):
    model, tok = stage_student()
    twin = copy.deepcopy(model)
    with caplog.at_level(logging.INFO):
        auto = _both_stages(model, tok)
    assert not [r for r in caplog.records if "cuda_graph" in r.getMessage()]
    assert auto == _both_stages(twin, tok, cuda_graph=False)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, cuda])])
def test_lora_stage_with_a_chunked_loss_reproduces_the_whole_batch_loss(device, caplog):
    """finetune.loss_chunk_tokens (logits recomputed per chunk in backward): the LoRA stage's losses match the
    whole-batch loss, eager on CPU; on CUDA the chunked stage runs as a captured graph against the eager one."""
    model, tok = stage_student(device)
    twin = copy.deepcopy(model)
    common = {"steps": 4, "batch_size": 2, "grad_accum": 2, "grad_clip": 1.0, "eval_every": 2, "eval_batches": 1,
              "sync_every": 2, "lr": 1e-3}
    curves = []
    for m, speed in ((model, {"cuda_graph": False}), (twin, {"cuda_graph": True, "loss_chunk_tokens": 13})):
        torch.manual_seed(0)
        peft = add_lora(m, LoraOptions(rank=2), cotrain_attention=False)
        with caplog.at_level(logging.INFO):
            ft = run_finetune(peft, FinetuneConfig(**common, **speed), stage_batches(tok, 2, device),
                              stage_val(tok, device), SEQ)
        curves.append(([p["loss"] for p in ft.curve], [p["eval_loss"] for p in ft.eval_curve]))
    assert _close(curves[0][0], curves[1][0]) and _close(curves[0][1], curves[1][1]), curves
    if device == "cuda":
        assert [r for r in caplog.records if "captured as a CUDA graph" in r.getMessage()]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, cuda])])
def test_recomputed_features_reproduce_both_stages(device, caplog):
    """recompute_features (φ recomputed in backward) in both stages: the same losses as keeping φ's intermediates,
    eager on CPU; on CUDA the recomputing stages run as captured graphs against the eager ones."""
    model, tok = stage_student(device)
    twin = copy.deepcopy(model)
    eager = _both_stages(model, tok, device, cuda_graph=False)
    with caplog.at_level(logging.INFO):
        recomputed = _both_stages(twin, tok, device, cuda_graph=device == "cuda", recompute_features=True)
    for a, b in zip(eager, recomputed, strict=True):
        assert _close(a, b), (a, b)
    if device == "cuda":
        assert len([r for r in caplog.records if "captured as a CUDA graph" in r.getMessage()]) == 2


def test_recomputed_features_keep_fewer_tensors_for_backward():
    """What autograd keeps for the LoRA step's backward shrinks by at least the feature maps' fp32 outputs."""
    from lolsearch.trial.surgery import linearized_layers, recomputed_features

    model, tok = stage_student()
    peft = add_lora(model, LoraOptions(rank=2), cotrain_attention=False)
    batch = next(iter(stage_batches(tok, 2)))
    kept = saved_bytes(peft, batch)
    with recomputed_features(peft, True):
        recomputing = saved_bytes(peft, batch)
    layers = list(linearized_layers(peft))
    assert not any(m.recompute_features for m in layers)  # the block restores the flag
    b, t = batch["input_ids"].shape
    heads, f = layers[0].num_heads, layers[0].feature_map_q.output_dim
    phi_bytes = 2 * b * heads * t * f * 4  # φ(q) and φ(k) in fp32, one layer
    assert kept - recomputing >= len(layers) * phi_bytes, (kept, recomputing)
