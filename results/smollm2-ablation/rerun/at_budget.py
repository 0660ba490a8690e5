"""The re-run's trials that differ only in distill.tokens (sliding 64, LoRA r8, seed 0): Δ ppl_ratio_ft between
two attention-transfer budgets of one feature map, with a paired bootstrap over the 64 test sequences. Each ratio
is taken against its own trial's LoRA teacher baseline (recomputed per sweep; the two agree to 0.05%).

    python results/smollm2-ablation/rerun/at_budget.py      # writes at_budget.txt beside this file
"""

import json
from pathlib import Path

import numpy as np

from lolsearch.report.stats import paired_ppl_bootstrap, verdict

HERE = Path(__file__).parent
TRIALS = {
    ("hedgehog", "1M"): "smollm2_series/trials/a4aadd4d38",
    ("hedgehog", "3.4M"): "smollm2_t2r_budget/trials/03e33e497e",
    ("hedgehog", "13.6M"): "smollm2_t2r_converge/trials/6352dad16e",
    ("t2r", "3.4M"): "smollm2_t2r_budget/trials/c3d66a3e24",
    ("t2r", "13.6M"): "smollm2_t2r_converge/trials/372c0b29a3",
}
PAIRS = [("hedgehog", "3.4M", "1M"), ("hedgehog", "13.6M", "3.4M"), ("t2r", "13.6M", "3.4M")]


def load(d: Path) -> tuple[float, float, np.ndarray, np.ndarray]:
    """(ppl_ratio_ft, ppl_teacher_ft, nll_sum [n_seq], tokens [n_seq]) of one trial folder."""
    m = json.loads((d / "result.json").read_text())["metrics"]
    seq = json.loads((d / "seq_nll.json").read_text())
    return m["ppl_ratio_ft"], m["ppl_teacher_ft"], np.array(seq["nll_sum"]), np.array(seq["tokens"])


def ratio_delta(a: Path, b: Path) -> str:
    (ra, ta, na, ka), (rb, tb, nb, kb) = load(a), load(b)
    _, lo, hi = paired_ppl_bootstrap((na, ka), (nb, kb), divisors=(ta, tb))
    return f"{ra:.4f} vs {rb:.4f}  delta {ra - rb:+.4f} [{lo:+.4f}, {hi:+.4f}] {verdict(lo, hi)}"


lines = [f"{fmap:8s} {long:>5s} vs {short:>4s} AT tokens: ppl_ratio_ft "
         + ratio_delta(HERE / TRIALS[fmap, long], HERE / TRIALS[fmap, short]) for fmap, long, short in PAIRS]
(HERE / "at_budget.txt").write_text("\n".join(lines) + "\n")
