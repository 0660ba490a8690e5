"""How much of a bf16 LoRA step's numerical error the LoRA products' dtype adds. The LoRA gradients of one batch
(4 x 256 Shakespeare validation tokens) on the real SmolLM2-135M, with the adapters' B set to small random values
so that A and B both get gradients, computed three ways from the same weights:

    reference   the model in fp32 (every product in fp32)
    float32     the model in bf16, the LoRA products in fp32 (peft's way, ``compute_dtype: float32``)
    model       the model in bf16, the LoRA products in bf16 (``compute_dtype: model``)

for three models: the softmax teacher (its own LoRA stage), the linearized model (Hedgehog + sliding 64, PyTorch
backend) right after the swap, and the same after AT_STEPS steps of attention transfer (fp32, 4 x 256 tokens per
step, lr 1e-2), where a trial's LoRA stage starts. Prints each bf16 way's relative error of the loss and relative L2
error over all LoRA gradients, against the reference.

    LOLSEARCH_CACHE=... python results/perf/lora_compute_20261205/gradients.py [AT_STEPS] > gradients.txt
"""

from __future__ import annotations

import copy
import sys
import time

import torch
from peft.tuners.lora import LoraLayer

from lolsearch.config import AttentionConfig, DataConfig, DistillConfig, LoraOptions, ModelConfig
from lolsearch.data import packed_batches
from lolsearch.models import load_model
from lolsearch.trial.distill import run_distill
from lolsearch.trial.finetune import add_lora, lm_loss
from lolsearch.trial.surgery import linearize

SEQ, BATCH = 256, 4
DATA = DataConfig(source="shakespeare", seq_len=SEQ)


def with_lora(model: torch.nn.Module, compute: str) -> torch.nn.Module:
    torch.manual_seed(0)
    peft = add_lora(model, LoraOptions(compute_dtype=compute), cotrain_attention=False)
    gen = torch.Generator().manual_seed(1)
    for layer in (m for m in peft.modules() if isinstance(m, LoraLayer)):
        w = layer.lora_B["default"].weight
        w.data.copy_(torch.randn(w.shape, generator=gen) * 0.01)
    return peft


def grads(peft: torch.nn.Module, batch: dict) -> tuple[float, dict[str, torch.Tensor]]:
    loss = lm_loss(peft, batch)
    loss.backward()
    return loss.item(), {n: p.grad.double() for n, p in peft.named_parameters() if p.requires_grad}


def bf16_twin(fp32_model: torch.nn.Module, attention: AttentionConfig | None) -> torch.nn.Module:
    """The model as a bf16 trial holds it: loaded in bf16 (RoPE tables stay fp32), linearized like ``fp32_model``
    with its fp32 feature maps and γ copied over (a trial's attention parameters stay fp32)."""
    model, _ = load_model(ModelConfig(source="smollm2-135m", dtype="bfloat16"), torch.device("cpu"))
    if attention is not None:
        linearize(model, attention)
        mine = dict(fp32_model.named_parameters())
        with torch.no_grad():
            for p_name, p in model.named_parameters():
                if p.dtype == torch.float32:
                    p.copy_(mine[p_name])
    return model


def compare(name: str, fp32_model: torch.nn.Module, attention: AttentionConfig | None, batch: dict) -> None:
    ref_loss, ref = grads(with_lora(copy.deepcopy(fp32_model), "float32"), batch)
    den = sum((g ** 2).sum() for g in ref.values()) ** 0.5
    for compute in ("float32", "model"):
        loss, got = grads(with_lora(bf16_twin(fp32_model, attention), compute), batch)
        err = (sum(((got[n] - ref[n]) ** 2).sum() for n in ref) ** 0.5 / den).item()
        print(f"{name:38s} {compute:8s} {ref_loss:9.4f} {loss:9.4f}   {abs(loss - ref_loss) / ref_loss:.2e}"
              f"        {err:.3e}", flush=True)


def main(at_steps: int) -> None:
    teacher, tok = load_model(ModelConfig(source="smollm2-135m", dtype="float32"), torch.device("cpu"))
    batch = next(iter(packed_batches(DATA, tok, "val", BATCH, 0, shuffle=False, num_tokens=BATCH * SEQ)))
    print("model                                  products  loss fp32  loss bf16  loss rel. err  LoRA gradients rel. L2 err")
    compare("teacher (softmax)", teacher, None, batch)
    attention = AttentionConfig(layout="sliding", window=64, backend="torch")
    linearize(teacher, attention)
    compare("linearized, before attention transfer", teacher, attention, batch)
    t = time.perf_counter()
    stage, _ = run_distill(teacher, DistillConfig(steps=at_steps, batch_size=BATCH, eval_every=10**6, eval_batches=1,
                                                  sync_every=10),
                           packed_batches(DATA, tok, "train", BATCH, 7),
                           lambda: packed_batches(DATA, tok, "val", BATCH, 0, shuffle=False, num_tokens=BATCH * SEQ), SEQ)
    print(f"(attention transfer: {at_steps} steps in {time.perf_counter() - t:.0f} s, loss {stage.curve[0]['loss']:.2f} "
          f"-> {stage.curve[-1]['loss']:.2f})", flush=True)
    compare(f"linearized, after {at_steps} steps", teacher, attention, batch)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 60)
