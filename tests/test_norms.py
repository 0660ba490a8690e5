"""The teacher's RMSNorms and gated MLPs swapped for FusedRMSNorm and FusedGatedMLP: the same model on CPU, one
rounding from the originals on a GPU."""

import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM
from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm

from lolsearch.config import ModelConfig
from lolsearch.config.plugins import MODELS
from lolsearch.models import load_model
from lolsearch.models.fused import FusedGatedMLP, FusedRMSNorm, fuse_gated_mlps, fuse_rms_norms

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_loaded_models_have_fused_norms_and_mlps_and_the_same_outputs():
    cfg = ModelConfig(source="toy-llama", toy={"layers": 2}, dtype="float32")
    plain, _ = MODELS.get("toy-llama")(cfg, torch.float32, torch.device("cpu"))
    fused, _ = load_model(cfg)
    kinds = {type(m).__name__ for m in fused.modules()}
    assert "LlamaRMSNorm" not in kinds and "LlamaMLP" not in kinds
    assert sum(isinstance(m, FusedRMSNorm) for m in fused.modules()) == 2 * 2 + 1
    assert sum(isinstance(m, FusedGatedMLP) for m in fused.modules()) == 2
    assert fused.state_dict().keys() == plain.state_dict().keys()
    ids = torch.randint(0, 256, (2, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(fused(ids).logits, plain.eval()(ids).logits)


def test_qwen3_query_and_key_norms_are_fused_too():
    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16)
    model = Qwen3ForCausalLM(cfg).eval()
    ids = torch.randint(0, 97, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(ids).logits
        assert fuse_rms_norms(model) == 2 * 4 + 1  # input, post-attention, q and k norms per layer; the final norm
        assert fuse_gated_mlps(model) == 2
        assert torch.equal(model(ids).logits, want)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
def test_fused_kernel_within_one_rounding_of_the_original(dtype):
    torch.manual_seed(0)
    norm = LlamaRMSNorm(576, eps=1e-5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
    norm = norm.to("cuda", dtype)
    fused = FusedRMSNorm(norm)
    x = (3 * torch.randn(4, 33, 576, device="cuda")).to(dtype).requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    got, want = fused(x), norm(x2)
    g = torch.randn_like(got)
    (gx,), (wx,) = torch.autograd.grad(got, x, g), torch.autograd.grad(want, x2, g)
    ulp = {torch.bfloat16: 2**-7, torch.float16: 2**-10, torch.float32: 2**-22}[dtype]
    assert ((got.float() - want.float()).abs() <= ulp * want.float().abs().clamp(min=1) + 1e-6).all()
    torch.testing.assert_close(gx.float(), wx.float(), rtol=4 * ulp, atol=4 * ulp * wx.float().abs().max().item())


def test_mlps_with_another_activation_stay():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, hidden_act="gelu")
    assert fuse_gated_mlps(LlamaForCausalLM(cfg)) == 0


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
def test_fused_mlp_within_one_rounding_of_the_original(dtype):
    """The activation's product is rounded once instead of twice; the projections are the same modules, so the
    output and the input and weight gradients stay within a few roundings of the original's."""
    from transformers import LlamaConfig

    torch.manual_seed(0)
    mlp = LlamaMLP(LlamaConfig(hidden_size=576, intermediate_size=1536, hidden_act="silu")).to("cuda", dtype)
    fused = FusedGatedMLP(mlp)
    x = torch.randn(4, 33, 576, device="cuda").to(dtype).requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    got, want = fused(x), mlp(x2)
    g = torch.randn_like(got)
    (gx, gw), (wx, ww) = (torch.autograd.grad(y, (inp, mlp.gate_proj.weight), g) for y, inp in ((got, x), (want, x2)))
    ulp = {torch.bfloat16: 2**-7, torch.float16: 2**-10, torch.float32: 2**-22}[dtype]
    for a, b in ((got, want), (gx, wx), (gw, ww)):
        assert ((a.float() - b.float()).abs().max() / b.float().abs().max()).item() <= 4 * ulp
