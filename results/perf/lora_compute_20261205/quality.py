"""LoRA products in fp32 (peft's way) vs in the model's dtype, on the real SmolLM2-135M in bf16: the same LoRA stage
from the same start and batches once per ``finetune.lora.compute_dtype``, for several LoRA initializations (seeds),
so the gap between the two settings can be read against the spread between seeds.

    LOLSEARCH_CACHE=... python results/perf/lora_compute_20261205/quality.py STEPS SEED [SEED ...] > quality.txt

The model is linearized (Hedgehog, sliding 64, the PyTorch backend) without attention transfer, so the LoRA stage
has a large loss to bring down and both settings are compared while the adapters move. bf16 on a CPU; 4 x 256
tokens per step, lr 1e-3 constant, validation on 4 x 4 x 256 tokens at the half and at the end.
"""

from __future__ import annotations

import copy
import statistics
import sys
import time

import torch

from lolsearch.config import AttentionConfig, DataConfig, FinetuneConfig, LoraOptions, ModelConfig
from lolsearch.data import packed_batches
from lolsearch.models import load_model
from lolsearch.trial.finetune import add_lora, run_finetune
from lolsearch.trial.surgery import linearize

SEQ, BATCH = 256, 4


def main(steps: int, seeds: list[int]) -> None:
    model, tok = load_model(ModelConfig(source="smollm2-135m", dtype="bfloat16"), torch.device("cpu"))
    linearize(model, AttentionConfig(layout="sliding", window=64, backend="torch"))
    data = DataConfig(source="shakespeare", seq_len=SEQ)
    cfg = FinetuneConfig(steps=steps, batch_size=BATCH, lr=1e-3, eval_every=steps // 2, eval_batches=4, sync_every=1,
                         schedule="constant", keep_best=False, cuda_graph=False)
    final: dict[str, list[float]] = {"float32": [], "model": []}
    print("seed  compute   s    train loss (first, last)  validation loss (half, end)", flush=True)
    for seed in seeds:
        for compute in final:
            torch.manual_seed(seed)
            peft = add_lora(copy.deepcopy(model), LoraOptions(compute_dtype=compute), cotrain_attention=False)
            t = time.perf_counter()
            stage = run_finetune(peft, cfg, packed_batches(data, tok, "train", BATCH, 1),
                                 lambda: packed_batches(data, tok, "val", BATCH, 0, shuffle=False,
                                                        num_tokens=4 * BATCH * SEQ), SEQ)
            loss, val = [p["loss"] for p in stage.curve], [p["eval_loss"] for p in stage.eval_curve]
            final[compute].append(val[-1])
            print(f"{seed:4d}  {compute:8s} {time.perf_counter() - t:4.0f}  {loss[0]:.4f}, {loss[-1]:.4f}"
                  f"          {val[0]:.4f}, {val[-1]:.4f}", flush=True)
    gaps = [m - f for f, m in zip(final["float32"], final["model"], strict=True)]
    print(f"final validation loss, mean over seeds: fp32 products {statistics.mean(final['float32']):.4f}, "
          f"bf16 products {statistics.mean(final['model']):.4f}")
    print(f"bf16 minus fp32, same seed: {', '.join(f'{g:+.4f}' for g in gaps)} (mean {statistics.mean(gaps):+.4f})")
    if len(seeds) > 1:
        print(f"spread between seeds (stdev): fp32 {statistics.stdev(final['float32']):.4f}, "
              f"bf16 {statistics.stdev(final['model']):.4f}")


if __name__ == "__main__":
    main(int(sys.argv[1]), [int(s) for s in sys.argv[2:]] or [0])
