"""H200 diagnostic (2026-11-28): relative error of the kernels in fp32 per tl.dot precision, and the gap between
prefill + one-token decode and one full forward for every attention backend (toy model, fp32).

    for p in tf32 tf32x3 ieee; do LOLSEARCH_KERNELS_FP32_DOT=$p PYTHONPATH=$PWD python3 results/kernels/fp32_and_decode_diag.py; done

Output of that run: results/kernels/RUN.md (fp32 accuracy; decode path inside the model).
"""
import os, sys, torch
sys.path.insert(0, "tests/kernels")
print("allow_tf32", torch.backends.cuda.matmul.allow_tf32, "prec", torch.get_float32_matmul_precision(),
      getattr(torch.backends.cuda.matmul, "fp32_precision", "?"), getattr(torch.backends, "fp32_precision", "?"))
from kernel_testlib import make_inputs, reference_and_grads, rel_err
from lolsearch.kernels import hybrid_attention
for t, lay, w, d, f in [(257, "sliding", 64, 64, 64), (23, "sliding", 5, 16, 32), (23, "linear", 0, 16, 32)]:
    inputs = make_inputs(1, 4, 2, t, d, f, device="cuda", dtype=torch.float32, seed=t)
    o = hybrid_attention(*inputs, w, lay)
    o_ref, _ = reference_and_grads(inputs, w, lay, torch.randn_like(o))
    print(os.environ.get("LOLSEARCH_KERNELS_FP32_DOT"), t, lay, w, d, f, "rel_err", f"{rel_err(o, o_ref):.2e}")
if os.environ.get("LOLSEARCH_KERNELS_FP32_DOT") == "tf32x3":
    from lolsearch.models import load_model
    from lolsearch.config import ModelConfig, AttentionConfig
    from lolsearch.trial.surgery import linearize, new_cache
    for backend in ["triton", "torch", "reference"]:
        for layout, window in [("sliding", 5), ("linear", 0)]:
            model, _ = load_model(ModelConfig(source="toy-llama", toy={"layers": 2}, dtype="float32"), torch.device("cuda"))
            linearize(model, AttentionConfig(layout=layout, window=window, backend=backend))
            ids = torch.randint(0, 256, (2, 23), generator=torch.Generator().manual_seed(2)).cuda()
            with torch.no_grad():
                full = model(ids).logits
                cache = new_cache(model)
                steps = [model(ids[:, :6], cache=cache, use_cache=True).logits]
                for t in range(6, 23):
                    steps.append(model(ids[:, t:t + 1], cache=cache, use_cache=True).logits)
            got = torch.cat(steps, 1)
            print("decode", backend, layout, f"{(got - full).abs().max().item():.2e}",
                  [f"{(got - full)[:, t].abs().max().item():.1e}" for t in (0, 5, 6, 10, 22)])
