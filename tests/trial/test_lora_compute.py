"""finetune.lora.compute_dtype: LoRA products in the model's dtype. On an fp32 model it changes nothing; on a 16-bit
model the adapters keep fp32 weights for the optimizer, their products run in 16 bits, the losses track peft's fp32
products, and autograd keeps no fp32 copy of the adapted layers' inputs."""

import copy
import math

import pytest
import torch
from peft.tuners.lora import LoraLayer
from trial_testlib import STAGE_SEQ, stage_batches, stage_student, stage_val

from lolsearch.config import FinetuneConfig, LoraOptions, parse_trial_config
from lolsearch.trial.finetune import InputDtypeLinear, add_lora, lm_loss, lora_compute, run_finetune
from lolsearch.trial.record import adapter_state

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
STEPS = {"steps": 6, "batch_size": 2, "eval_every": 3, "eval_batches": 1, "sync_every": 1, "lr": 1e-3,
         "cuda_graph": False}


def _curves(model, compute: str, tok, device: str = "cpu") -> tuple[list[float], torch.nn.Module]:
    torch.manual_seed(0)
    peft = add_lora(model, LoraOptions(rank=4, compute_dtype=compute), cotrain_attention=False)
    for layer in (m for m in peft.modules() if isinstance(m, LoraLayer)):  # B = 0 would hide the products
        for name in layer.lora_B:
            torch.nn.init.normal_(layer.lora_B[name].weight, std=0.02)
    ft = run_finetune(peft, FinetuneConfig(**STEPS), stage_batches(tok, 3, device), stage_val(tok, device), STAGE_SEQ)
    return [p["loss"] for p in ft.curve] + [p["eval_loss"] for p in ft.eval_curve], peft


def _student(dtype: torch.dtype, device: str = "cpu"):
    model, tok = stage_student(device)
    return model.to(dtype), tok


def test_model_compute_is_peft_exactly_on_an_fp32_model():
    model, tok = _student(torch.float32)
    ref, ref_peft = _curves(copy.deepcopy(model), "float32", tok)
    got, peft = _curves(model, "model", tok)
    assert got == ref
    assert sum(isinstance(m, InputDtypeLinear) for m in peft.modules()) == 2 * 4 * 2  # A, B × q k v o × 2 layers
    a, b = adapter_state(ref_peft), adapter_state(peft)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, cuda])])
def test_model_compute_in_bf16_tracks_fp32_products(device):
    model, tok = _student(torch.bfloat16, device)
    ref, _ = _curves(copy.deepcopy(model), "float32", tok, device)
    got, peft = _curves(model, "model", tok, device)
    assert all(math.isclose(a, b, rel_tol=1e-3) for a, b in zip(ref, got, strict=True)), (ref, got)
    trained = [p for p in peft.parameters() if p.requires_grad]
    assert trained and all(p.dtype == torch.float32 for p in trained)  # what the optimizer updates stays fp32
    assert ref != got  # the products do run in bf16


def test_model_compute_runs_products_in_bf16_and_keeps_no_fp32_inputs():
    def run(compute: str) -> tuple[dict[torch.dtype, int], set[torch.dtype]]:
        model, tok = _student(torch.bfloat16)
        peft = add_lora(model, LoraOptions(rank=4, compute_dtype=compute), cotrain_attention=False)
        product_dtypes: set[torch.dtype] = set()
        for layer in (m for m in peft.modules() if isinstance(m, LoraLayer)):
            layer.lora_A["default"].register_forward_hook(lambda m, i, o: product_dtypes.add(o.dtype))
        batch = next(iter(stage_batches(tok, 2)))
        storages: dict[int, tuple[torch.dtype, int]] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:  # distinct storages autograd keeps, by dtype
            storages[t.untyped_storage().data_ptr()] = (t.dtype, t.untyped_storage().nbytes())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            lm_loss(peft, batch).backward()
        kept: dict[torch.dtype, int] = {}
        for dtype, n in storages.values():
            kept[dtype] = kept.get(dtype, 0) + n
        return kept, product_dtypes

    fp32_kept, fp32_products = run("float32")
    model_kept, model_products = run("model")
    assert fp32_products == {torch.float32} and model_products == {torch.bfloat16}
    cfg = stage_student()[0].config
    # peft copies each adapted layer's input to fp32 (q, k and v each their own copy) and keeps it for dA
    copies = 2 * STAGE_SEQ * 4 * (3 * cfg.hidden_size + cfg.num_attention_heads * cfg.head_dim) * cfg.num_hidden_layers
    assert fp32_kept[torch.float32] - model_kept[torch.float32] >= copies, (fp32_kept, model_kept, copies)
    # the CPU's bf16 linear keeps its own contiguous input per product: half the bytes of the fp32 copies
    assert sum(fp32_kept.values()) - sum(model_kept.values()) >= copies / 2, (fp32_kept, model_kept, copies)


def test_compute_dtype_is_speed_only():
    """The default computes in the model's dtype; peft's fp32 products are the same trial (same id), as compile is."""
    base = parse_trial_config({})
    other = parse_trial_config({"finetune": {"lora": {"compute_dtype": "float32"}}})
    assert base.finetune.lora.compute_dtype == "model" and other.trial_id == base.trial_id


def test_lora_compute_switches_a_model_and_back():
    """What ``perf train --lora-compute float32 model`` times side by side on one model."""
    model, tok = _student(torch.bfloat16)
    peft = add_lora(model, LoraOptions(rank=4, compute_dtype="float32"), cotrain_attention=False)
    batch = next(iter(stage_batches(tok, 2)))

    def loss_and_product_dtypes() -> tuple[float, set[torch.dtype]]:
        seen: set[torch.dtype] = set()
        hooks = [layer.lora_A["default"].register_forward_hook(lambda m, i, o: seen.add(o.dtype))
                 for layer in peft.modules() if isinstance(layer, LoraLayer)]
        with torch.no_grad():
            loss = lm_loss(peft, batch).item()
        for h in hooks:
            h.remove()
        return loss, seen

    keys, params = set(peft.state_dict()), [id(p) for p in peft.parameters()]
    plain, dtypes = loss_and_product_dtypes()
    assert dtypes == {torch.float32}
    with lora_compute(peft, "model"):
        assert set(peft.state_dict()) == keys and [id(p) for p in peft.parameters()] == params
        fast, dtypes = loss_and_product_dtypes()
        assert dtypes == {torch.bfloat16}
    assert loss_and_product_dtypes() == (plain, {torch.float32})
    assert not any(isinstance(m, InputDtypeLinear) for m in peft.modules())
    assert math.isclose(fast, plain, rel_tol=1e-3)


def test_adapters_computed_in_the_model_dtype_merge_into_the_weights():
    """Export merges LoRA into the base weights (peft's merge_and_unload); the cast factors merge like peft's own."""
    model, tok = _student(torch.float32)
    _, peft = _curves(model, "model", tok)
    batch = next(iter(stage_batches(tok, 2)))
    with torch.no_grad():
        before = peft(input_ids=batch["input_ids"]).logits
        merged = peft.merge_and_unload()
        after = merged(input_ids=batch["input_ids"]).logits
    assert not any(isinstance(m, (LoraLayer, InputDtypeLinear)) for m in merged.modules())
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
