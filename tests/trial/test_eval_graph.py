"""Evaluation passes: causal forwards with no mask (no host sync per batch), replayed from CUDA graphs on a GPU."""

import pytest
import torch
import transformers.masking_utils as masking_utils
from peft import LoraConfig, get_peft_model

from lolsearch.config import AttentionConfig, ModelConfig, parse_trial_config
from lolsearch.models import load_model
from lolsearch.trial import evaluate
from lolsearch.trial.eval_pass import final_eval
from lolsearch.trial.surgery import linearize

pytestmark = pytest.mark.usefixtures("one_thread")


def student(device: str = "cpu", backend: str = "torch") -> torch.nn.Module:
    """A 3-layer toy-llama, linearized (layer 1 kept softmax), with non-zero LoRA: student and teacher differ."""
    torch.manual_seed(0)
    model, _ = load_model(ModelConfig(source="toy-llama", toy={"layers": 3}), device)
    linearize(model, AttentionConfig(feature_map={"kind": "hedgehog", "params": {"feature_dim": 8}}, layout="sliding",
                                     window=4, backend=backend, chunk_size=16, softmax_layers=(1,)))
    model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    return model


def reference(device: str = "cpu") -> torch.nn.Module:
    torch.manual_seed(1)
    return load_model(ModelConfig(source="toy-llama", toy={"layers": 3}), device)[0]


def batches(device: str = "cpu", sizes: tuple[int, ...] = (3, 3, 3, 2)) -> list[dict]:
    """Unpadded batches of 32 tokens; the last one shorter, as a capped pass's last batch can be."""
    gen = torch.Generator().manual_seed(3)
    out = []
    for n in sizes:
        ids = torch.randint(0, 256, (n, 32), generator=gen)
        labels = ids.clone()
        labels[:, :3] = -100
        out.append({"input_ids": ids.to(device), "labels": labels.to(device)})
    return out


def every_metric(model, ref, data, graph) -> list[float]:
    ev = final_eval(model, data, ref, graph)
    nll, _ = evaluate.sequence_nll(model, data, graph)
    agree = evaluate.teacher_agreement(model, data, graph)
    mse, by_layer = evaluate.attention_mse(model, data, graph)
    return [*ev.nll_sum, ev.kl_teacher, ev.top1_agree, ev.kl_reference, *nll, agree["kl_teacher"],
            agree["top1_agree"], evaluate.kl_to_reference(ref, model, data, graph), mse, *by_layer]


def test_eval_forwards_do_not_scan_for_packed_sequences(monkeypatch):
    """transformers' scan reads a device value back on every eager forward; evaluation batches are unpadded,
    so their forwards skip it, and every metric stays what the masked forward gives."""
    model, ref, data = student(), reference(), batches()
    with monkeypatch.context() as m:
        m.setattr(evaluate.surgery, "unmasked_causal", _plain)  # the forward as it was: transformers' own mask path
        masked = every_metric(model, ref, data, "auto")
    scans = []
    scan = masking_utils.find_packed_sequence_indices
    monkeypatch.setattr(masking_utils, "find_packed_sequence_indices", lambda *a, **k: scans.append(1) or scan(*a, **k))
    fast = every_metric(model, ref, data, "auto")
    assert scans == []
    assert fast == pytest.approx(masked, rel=1e-6, abs=1e-9)


def _plain(model, seq_len):
    import contextlib

    return contextlib.nullcontext(model)


def test_eval_cuda_graph_is_speed_only():
    """``eval.cuda_graph`` keeps a trial's id and is checked like every field."""
    base = parse_trial_config({}, "<t>")
    off = parse_trial_config({"eval": {"cuda_graph": False}}, "<t>")
    assert base.eval.cuda_graph == "auto" and off.eval.cuda_graph is False
    assert off.trial_id == base.trial_id
    with pytest.raises(Exception, match="cuda_graph"):
        parse_trial_config({"eval": {"cuda_graph": "sometimes"}}, "<t>")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_graphed_eval_equals_eager(monkeypatch, backend):
    """Every evaluation pass gives the eager pass's metrics when its forwards are replayed from CUDA graphs; the
    replays happen (two per forward and pass here: batches 2 and 3), and the short last batch runs eagerly."""
    model, ref, data = student("cuda", backend), reference("cuda"), batches("cuda")
    eager = every_metric(model, ref, data, False)
    replays = []
    replay = torch.cuda.CUDAGraph.replay
    monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", lambda self: replays.append(1) or replay(self))
    graphed = every_metric(model, ref, data, True)
    forwards = 3 + 1 + 2 + 1 + 2  # final_eval, sequence_nll, teacher_agreement, attention_mse, kl_to_reference
    assert len(replays) == 2 * forwards
    assert graphed == pytest.approx(eager, rel=2e-4, abs=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_forward_that_cannot_be_captured_runs_eagerly_with_one_warning(caplog):
    """A host read inside the forward breaks capture: the call still returns the eager value, a warning says so,
    and every later call runs eagerly."""
    import logging

    from lolsearch.trial.forward_graph import GraphedForward

    def synced(x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.sum().item() >= 0 else x

    forward = GraphedForward("synced", synced, torch.device("cuda"))
    x = torch.ones(4, device="cuda")
    with caplog.at_level(logging.WARNING):
        got = [forward(x * i).clone() for i in range(1, 5)]
    assert [g.tolist() for g in got] == [[2.0 * i] * 4 for i in range(1, 5)]
    assert forward.graph is None and forward.replays == 0
    assert len([r for r in caplog.records if "capture failed" in r.getMessage()]) == 1
    assert torch.cuda.current_stream() == torch.cuda.default_stream()
    torch.nn.functional.dropout(torch.ones(64, device="cuda"), 0.5)  # the generator is not left capturing
