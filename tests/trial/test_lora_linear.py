"""The fused LoRA layer (``trial/lora_linear.py``) against peft's operators: the same output and gradients (x, A, B)
in float64 and within one rounding in bf16, the base weight kept frozen; peft's own forward wherever the fused one
does not apply (dropout in training, adapters off, merged weights, fp32 products); the class switches both ways."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from lolsearch.trial import lora_linear
from lolsearch.trial.finetune import lora_compute, set_lora_compute
from lolsearch.trial.lora_linear import FusedLoraLinear, LoraLinearFn


class _Proj(nn.Module):
    def __init__(self, bias: bool) -> None:
        super().__init__()
        self.q_proj = nn.Linear(16, 12, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.q_proj(x)


def _adapted(dtype: torch.dtype, bias: bool = True, dropout: float = 0.0):
    torch.manual_seed(0)
    model = get_peft_model(_Proj(bias).to(dtype), LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout,
                                                              target_modules=["q_proj"]))
    layer = model.base_model.model.q_proj
    nn.init.normal_(layer.lora_B["default"].weight, std=0.3)  # B = 0 would hide the adapter's product
    set_lora_compute(model, "model")
    return model, layer


def _run(model, layer, x: torch.Tensor, fused: bool, monkeypatch) -> list[torch.Tensor]:
    calls = []
    real = LoraLinearFn.apply
    monkeypatch.setattr(lora_linear, "fused_here", lambda t: fused)
    monkeypatch.setattr(LoraLinearFn, "apply", lambda *a: calls.append(1) or real(*a))
    x = x.detach().requires_grad_(True)
    y = model(x)
    params = [x, layer.lora_A["default"].weight, layer.lora_B["default"].weight]
    grads = torch.autograd.grad((y * torch.linspace(-1, 1, y.shape[-1], dtype=y.dtype)).sum(), params)
    assert bool(calls) == fused
    return [y.detach(), *grads]


@pytest.mark.parametrize("bias", [True, False])
def test_fused_layer_equals_peft_in_float64(bias, monkeypatch):
    model, layer = _adapted(torch.float64, bias)
    assert isinstance(layer, FusedLoraLinear)
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    want = _run(model, layer, x, False, monkeypatch)
    got = _run(model, layer, x, True, monkeypatch)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
    assert not layer.base_layer.weight.requires_grad and layer.base_layer.weight.grad is None


def test_fused_layer_in_bf16_keeps_fp32_adapter_gradients(monkeypatch):
    """bf16 products from fp32 adapter weights, as in training: within bf16 rounding of peft's, gradients in fp32."""
    model, layer = _adapted(torch.bfloat16)
    assert layer.lora_A["default"].weight.dtype == torch.float32
    x = torch.randn(3, 7, 16, dtype=torch.bfloat16)
    want = _run(model, layer, x, False, monkeypatch)
    got = _run(model, layer, x, True, monkeypatch)
    assert [t.dtype for t in got] == [torch.bfloat16, torch.bfloat16, torch.float32, torch.float32]
    for g, w in zip(got, want, strict=True):
        err = (g.float() - w.float()).abs().max() / w.float().abs().max()
        assert err.item() < 2e-2, err


def test_peft_forward_where_the_fused_one_does_not_apply(monkeypatch):
    x = torch.randn(2, 3, 16, dtype=torch.float64)
    model, layer = _adapted(torch.float64, dropout=0.5)
    model.train()
    _run(model, layer, x, False, monkeypatch)  # asserts LoraLinearFn was not called ...
    monkeypatch.setattr(lora_linear, "fused_here", lambda t: True)
    assert layer._plain_adapter(x) is None  # ... and would not be even where it may run: dropout in training
    model.eval()
    assert layer._plain_adapter(x) == "default"
    with model.disable_adapter():
        assert layer._plain_adapter(x) is None
    with lora_compute(model, "float32"):  # peft's fp32 products: peft's class and forward
        assert type(layer) is not FusedLoraLinear
    assert type(layer) is FusedLoraLinear
    layer.merge()
    assert layer._plain_adapter(x) is None
    layer.unmerge()
    layer.base_layer.weight.requires_grad_(True)
    assert layer._plain_adapter(x) is None
