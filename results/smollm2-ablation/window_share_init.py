"""Window share at initialization (after the swap, before any training) per layer for SmolLM2-135M on the
Shakespeare test split: the committed ablation's attention settings (sliding / terrace 64), Hedgehog vs T2R.

Share = the fraction of each row's attention weight on the window (softmax) keys, averaged over heads and the last
256 queries of one 1024-token test sequence (lolsearch.trial.diagnostics). fp32 on CPU, about 80 s:

    .venv/bin/python results/smollm2-ablation/window_share_init.py results/smollm2-ablation/window_share_init.json
"""
import json
import sys
import time
from pathlib import Path

import torch

from lolsearch.config import parse_trial_config
from lolsearch.models import load_model
from lolsearch.trial.diagnostics import window_share_by_layer
from lolsearch.trial.quality import eval_stream
from lolsearch.trial.surgery import linearize

torch.set_num_threads(1)
out = {}
for fm in ("hedgehog", "t2r"):
    for layout in ("sliding", "terrace"):
        cfg = parse_trial_config({"model": {"source": "smollm2-135m", "dtype": "float32"}, "device": "cpu",
                                  "data": {"source": "shakespeare", "seq_len": 1024},
                                  "attention": {"feature_map": {"kind": fm}, "layout": layout, "window": 64, "backend": "torch"},
                                  "eval": {"tokens": 1024, "batch_size": 1}})
        t = time.time()
        model, tok = load_model(cfg.model, torch.device("cpu"))
        linearize(model, cfg.attention)
        shares = window_share_by_layer(model, eval_stream(cfg, cfg.data, tok, torch.device("cpu")))
        out[f"{fm} {layout} 64"] = shares
        s = sorted(shares)
        sys.stdout.write(f"{fm} {layout} {time.time() - t:.0f}s min {s[0]:.2e} median {s[len(s) // 2]:.2e} "
                         f"max {s[-1]:.2e}\n")
Path(sys.argv[1]).write_text(json.dumps(out, indent=1))
