"""The pre-training check of the Triton attention at a trial's shapes (the interpreter on CPU)."""

from __future__ import annotations

import pytest
import torch
from trial_testlib import toy_config

from lolsearch.config import AttentionConfig, ModelConfig, TrialConfig
from lolsearch.models import load_model
from lolsearch.trial import kernel_check
from lolsearch.trial.kernel_check import KernelCheckError, Shape, check_model, trial_shapes
from lolsearch.trial.surgery import linearize


@pytest.fixture(autouse=True)
def fresh_memo(monkeypatch):
    """Each test starts with no layer kind checked in this process."""
    monkeypatch.setattr(kernel_check, "_passed", set())


def toy(backend: str, layout: str = "sliding", window: int = 8):
    pytest.importorskip("triton")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, _ = load_model(ModelConfig(source="toy-llama", toy={"layers": 2}, dtype="float32"), device)
    linearize(model, AttentionConfig(feature_map={"kind": "hedgehog", "params": {"feature_dim": 8}}, layout=layout,
                                     window=window, backend=backend, chunk_size=16))
    return model


def test_triton_layers_pass_once_per_kind_and_shape(one_thread):
    model = toy("triton")
    shapes = [Shape(2, 70, True), Shape(2, 70, False), Shape(2, 70, True)]
    got = check_model(model, shapes)
    # two layers of one kind, two distinct shapes; fp32 in the interpreter (or tf32x3 on a GPU) is near exact
    assert got["kernel_check_cases"] == 2 and got["kernel_check_max_err"] < 1e-4
    assert check_model(model, shapes) == {}  # checked already in this process
    assert check_model(model, [Shape(1, 70, False)])["kernel_check_cases"] == 1


def test_a_wrong_kernel_fails_with_where_and_how_much(monkeypatch, one_thread):
    """A kernel off by 10% only without autograd (as a plan-dependent fault would be) is caught and named."""
    model = toy("triton", "terrace", 16)
    real = kernel_check.hybrid_attention

    def faulty(*args, **kwargs):
        out = real(*args, **kwargs)
        return out if torch.is_grad_enabled() else out * 1.1

    monkeypatch.setattr(kernel_check, "hybrid_attention", faulty)
    assert check_model(model, [Shape(2, 40, True)])["kernel_check_cases"] == 1
    with pytest.raises(KernelCheckError, match=r"layout terrace window 16, .*batch 3 x 40 tokens, forward without "
                                               r"autograd\): relative error o 1\.00e-01 > 0\.001"):
        check_model(model, [Shape(3, 40, False)])


@pytest.mark.parametrize("grad", [False, True])
def test_fused_feature_maps_are_checked_where_used(grad, monkeypatch, one_thread):
    """With the fused feature maps on, the check also compares them with the modules (and their gradients); a
    fused map off by 10% fails with its name and the setting that turns it off."""
    from lolsearch.attention.featuremaps import Hedgehog
    from lolsearch.trial.surgery import fused_features

    model = toy("triton")
    with fused_features(model, True):
        got = check_model(model, [Shape(2, 70, grad)])
        assert got["kernel_check_cases"] == 1 and got["kernel_check_max_err"] < 1e-4
        real = Hedgehog.fused
        monkeypatch.setattr(Hedgehog, "fused", lambda self, x, dt: real(self, x, dt) * 1.1)
        with pytest.raises(KernelCheckError, match=r"relative error map φ_q 1\.00e-01, (.* )?map φ_k 1\.00e-01.* > 0\.001; "
                                                   r"LOLSEARCH_KERNELS_FUSED_FEATURES=0"):
            check_model(model, [Shape(3, 70, grad)])
    with fused_features(model, False):  # the modules: another kind, checked without the maps
        assert check_model(model, [Shape(3, 70, grad)])["kernel_check_cases"] == 1


@pytest.mark.parametrize("grad", [False, True])
def test_the_fused_rope_is_checked_where_used(grad, monkeypatch, one_thread):
    """The layers rotate q and k by the fused RoPE (Triton backend, LOLSEARCH_KERNELS_FUSED_ROPE on): the check
    compares it with transformers' RoPE; one off by 10% fails with its name and the setting that turns it off, and
    with the setting off the layers are another kind, checked without it."""
    model = toy("triton")
    assert check_model(model, [Shape(2, 70, grad)])["kernel_check_max_err"] < 1e-4
    real = kernel_check.fused_rope
    monkeypatch.setattr(kernel_check, "fused_rope", lambda *a: tuple(x * 1.1 for x in real(*a)))
    with pytest.raises(KernelCheckError, match=r"relative error rope q 1\.00e-01, rope k 1\.00e-01, rope v 1\.00e-01.* "
                                               r"> 0\.001; LOLSEARCH_KERNELS_FUSED_ROPE=0"):
        check_model(model, [Shape(3, 70, grad)])
    monkeypatch.setenv("LOLSEARCH_KERNELS_FUSED_ROPE", "0")
    assert check_model(model, [Shape(3, 70, grad)])["kernel_check_cases"] == 1


def test_a_wrong_gradient_fails(monkeypatch, one_thread):
    model = toy("triton")
    real = kernel_check.hybrid_attention

    def faulty(q, k, v, phi_q, phi_k, gamma, *rest, **kwargs):  # the output is right, dv is scaled by 2
        out = real(q, k, v, phi_q, phi_k, gamma, *rest, **kwargs)
        return out + (out - out.detach()) if torch.is_grad_enabled() else out

    monkeypatch.setattr(kernel_check, "hybrid_attention", faulty)
    with pytest.raises(KernelCheckError, match=r"forward \+ backward\): relative error dq .*dv 1\.00e\+00"):
        check_model(model, [Shape(2, 40, True)])


def test_a_shape_out_of_memory_is_skipped_and_named(monkeypatch):
    model = toy("triton")
    real = kernel_check.check_layer

    def big(layer, shape):
        if shape.batch > 2:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(layer, shape)

    monkeypatch.setattr(kernel_check, "check_layer", big)
    got = check_model(model, [Shape(2, 40, False), Shape(8, 40, True)])
    assert got["kernel_check_cases"] == 1 and got["kernel_check_skipped"] == "out of memory: 8x40 grad"


def test_layers_on_the_pytorch_path_are_not_checked():
    assert check_model(toy("torch"), [Shape(2, 40, True)]) == {}


def test_trial_shapes_cover_training_validation_and_every_evaluation_length():
    cfg = TrialConfig.model_validate(toy_config(
        distill={"tokens": 1024, "batch_size": 4}, finetune={"tokens": 1024, "batch_size": 2},
        eval={"tokens": 1024, "batch_size": 8, "seq_lens": [128, 256]},
    ))
    assert trial_shapes(cfg) == [Shape(4, 64, True), Shape(4, 64, False), Shape(2, 64, True), Shape(2, 64, False),
                                 Shape(8, 64, False), Shape(4, 128, False), Shape(2, 256, False)]
    no_lora = TrialConfig.model_validate(toy_config(distill={"batch_size": 4}, finetune={"enabled": False},
                                                    eval={"batch_size": 8}))
    assert trial_shapes(no_lora) == [Shape(4, 64, True), Shape(4, 64, False), Shape(8, 64, False)]
    # passkey prompts run in batches of the evaluation's 8 x 64 tokens: 5 prompts of 128 -> 4 + 1, of 512 -> 1 each
    passkey = TrialConfig.model_validate(toy_config(distill={"batch_size": 4}, finetune={"enabled": False},
                                                    eval={"batch_size": 8, "passkey": {"lengths": [128, 512],
                                                                                         "depths": [0.5], "samples": 5}}))
    assert trial_shapes(passkey)[3:] == [Shape(4, 128, False), Shape(1, 128, False), Shape(1, 512, False)]


def test_a_wrong_kernel_fails_the_trial_before_its_first_evaluation(monkeypatch, tmp_path, one_thread):
    from lolsearch.config import parse_trial_config
    from lolsearch.trial.run import run_trial

    pytest.importorskip("triton")
    real = kernel_check.hybrid_attention
    monkeypatch.setattr(kernel_check, "hybrid_attention", lambda *a, **k: real(*a, **k) * 1.1)
    raw = toy_config(distill={"steps": 2, "batch_size": 2}, finetune={"steps": 2, "batch_size": 2},
                     eval={"tokens": 256, "batch_size": 2})
    raw["attention"]["backend"] = "triton"
    result = run_trial(parse_trial_config(raw), tmp_path)
    assert result.status == "failed"
    assert result.error.startswith("KernelCheckError: Triton kernels disagree with the PyTorch path "
                                   "(layout terrace window 8"), result.error
    assert "ppl_swap" not in result.metrics and "kernel_check_s" not in result.timing
