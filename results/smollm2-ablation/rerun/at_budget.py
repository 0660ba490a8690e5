"""Hedgehog + sliding 64 + LoRA r8 (seed 0) after 1M vs 3.4M attention-transfer tokens, the two trials of the
re-run that differ only in distill.tokens: Δ ppl_ratio_ft with a paired bootstrap over the 64 test sequences.

    python results/smollm2-ablation/rerun/at_budget.py      # writes at_budget.txt beside this file
"""

import json
from pathlib import Path

import numpy as np

from lolsearch.report.stats import paired_ppl_bootstrap, verdict

HERE = Path(__file__).parent
PAIRS = {"1M": HERE / "smollm2_series/trials/a4aadd4d38", "3.4M": HERE / "smollm2_t2r_budget/trials/03e33e497e"}


def load(d: Path) -> tuple[dict, tuple[np.ndarray, np.ndarray]]:
    seq = json.loads((d / "seq_nll.json").read_text())
    return json.loads((d / "result.json").read_text()), (np.array(seq["nll_sum"]), np.array(seq["tokens"]))


(r_long, s_long), (r_short, s_short) = load(PAIRS["3.4M"]), load(PAIRS["1M"])
teacher = r_long["metrics"]["ppl_teacher_ft"]
assert teacher == r_short["metrics"]["ppl_teacher_ft"], "the two trials must share the LoRA teacher baseline"
d, lo, hi = (x / teacher for x in paired_ppl_bootstrap(s_long, s_short))
(HERE / "at_budget.txt").write_text(f"ppl_ratio_ft 1M {r_short['metrics']['ppl_ratio_ft']:.4f}  3.4M {r_long['metrics']['ppl_ratio_ft']:.4f}  "
      f"delta {d:+.4f} [{lo:+.4f}, {hi:+.4f}] {verdict(lo, hi)}\n")
