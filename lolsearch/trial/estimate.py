"""How long a trial takes on this device, from a short calibration: the trial's own code (:func:`run_trial`)
on a miniature of its config (a few optimizer steps per stage, two evaluation batches), extrapolated to the
real budgets. A calibration is cached per (model, data shape, batch sizes, design, device, threads), so
``plan``/``run``/``sweep`` pay for it once.

Extrapolation (seconds): load + eval × (eval tokens / calibrated eval tokens) + per stage: steps × s/step +
validations × s/validation + efficiency measurement + the teacher baselines (its ppl, and the LoRA stage on the
teacher when the trial asks for ``ppl_teacher_ft``; a sweep computes them once, beside the trials).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass

import torch

from lolsearch.config import TrialConfig
from lolsearch.core.files import atomic_write_text, cache_path, fingerprint

log = logging.getLogger(__name__)

CAL_STEPS = 4  # optimizer steps per stage in the miniature (the first is warm-up)
CAL_EVAL_BATCHES = 2
STAGES = ("distill", "finetune")
# A trial longer than this asks for --yes (run/sweep) and is flagged by validate/plan.
THRESHOLD_S = {"cpu": 3600.0, "cuda": 12 * 3600.0}


@dataclass
class Calibration:
    """Seconds measured on the miniature of a trial config."""

    device: str
    threads: int
    load_s: float
    eval_s: float  # every evaluation pass of the trial over `eval_tokens` tokens
    eval_tokens: int
    step_s: dict[str, float]  # seconds per optimizer step after the first
    val_s: dict[str, float]  # seconds per validation (and set-up, e.g. the initial MSE) of a stage
    efficiency_s: float
    baseline_s: float  # teacher ppl on `eval_tokens` (+ the teacher's LoRA stage of the miniature)
    teacher_ft: bool


@dataclass
class Estimate:
    """Estimated seconds of one trial, by part."""

    load_s: float
    eval_s: float
    stage_s: dict[str, float]
    efficiency_s: float
    baseline_s: float
    tokens: dict[str, int]

    @property
    def trial_s(self) -> float:
        """Without the teacher baselines (a sweep computes those once)."""
        return self.load_s + self.eval_s + sum(self.stage_s.values()) + self.efficiency_s

    @property
    def total_s(self) -> float:
        """One trial run alone (``lolsearch run``), baselines included."""
        return self.trial_s + self.baseline_s


def cost_key(cfg: TrialConfig, device: str) -> str:
    """Fingerprint of what a step's cost depends on (not the budgets, not the seed)."""
    data = cfg.model_dump(mode="json")
    for stage in STAGES:
        for k in ("tokens", "steps", "eval_every", "warmup_steps"):
            data[stage].pop(k, None)
    data["eval"].pop("tokens", None)
    data.pop("seed", None)
    return fingerprint(json.dumps({"cfg": data, "device": device, "threads": torch.get_num_threads()}, sort_keys=True))


def miniature(cfg: TrialConfig) -> TrialConfig:
    """``cfg`` with CAL_STEPS steps per stage, one validation at the end, two evaluation batches."""
    update: dict = {}
    for stage in STAGES:
        sc = getattr(cfg, stage)
        if sc.enabled:
            update[stage] = sc.model_copy(update={"tokens": None, "steps": CAL_STEPS, "eval_every": CAL_STEPS,
                                                  "warmup_steps": min(sc.warmup_steps, 1)})
    tokens = min(cfg.eval.tokens, CAL_EVAL_BATCHES * cfg.eval.batch_size * cfg.data.seq_len)
    update["eval"] = cfg.eval.model_copy(update={"tokens": tokens, "lm_eval_limit": 2})
    return cfg.model_copy(update=update)


def calibrate(cfg: TrialConfig, *, use_cache: bool = True) -> Calibration:
    """Runs the miniature of ``cfg`` on its device (or reads the cached calibration)."""
    from lolsearch.models import resolve_device
    from lolsearch.trial.run import run_trial

    device = resolve_device(cfg.device).type
    path = cache_path("calibration", f"{cost_key(cfg, device)}.json")
    if use_cache and path.is_file():
        return Calibration(**json.loads(path.read_text()))
    mini = miniature(cfg)
    quiet = logging.getLogger("lolsearch")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # the miniature's step and stage lines are not news
    try:
        result = run_trial(mini)
    finally:
        quiet.setLevel(level)
    if result.status != "ok":
        raise RuntimeError(f"calibration run failed: {result.error}")
    t, m = result.timing, result.metrics
    step_s, val_s = {}, {}
    for stage in STAGES:
        curve = result.curves.get(stage) or []
        if len(curve) < 2:
            continue
        elapsed = [p["tokens"] / p["tok_s"] for p in curve]
        step_s[stage] = (elapsed[-1] - elapsed[0]) / (len(curve) - 1)
        val_s[stage] = max(0.0, t.get(f"{stage}_s", 0.0) - elapsed[-1])
    baseline_s = t.get("baseline_s", 0.0)
    cal = Calibration(device=device, threads=torch.get_num_threads(), load_s=t.get("load_s", 0.0),
                      eval_s=t.get("eval_s", 0.0), eval_tokens=mini.eval.tokens, step_s=step_s, val_s=val_s,
                      efficiency_s=t.get("efficiency_s", 0.0), baseline_s=baseline_s,
                      teacher_ft="ppl_teacher_ft" in m)
    atomic_write_text(path, json.dumps(asdict(cal), indent=1))
    return cal


def cached_calibration(cfg: TrialConfig) -> Calibration | None:
    """The cached calibration of ``cfg``'s cost key on its device, without computing one."""
    from lolsearch.models import resolve_device

    path = cache_path("calibration", f"{cost_key(cfg, resolve_device(cfg.device).type)}.json")
    return Calibration(**json.loads(path.read_text())) if path.is_file() else None


def estimate(cfg: TrialConfig, cal: Calibration) -> Estimate:
    """Extrapolates ``cal`` (a calibration of a config with the same cost key) to ``cfg``'s budgets."""
    seq = cfg.data.seq_len
    eval_scale = cfg.eval.tokens / max(1, cal.eval_tokens)
    stage_s, tokens = {}, {}
    for stage in STAGES:
        sc = getattr(cfg, stage)
        steps = sc.num_steps(seq)
        if not steps:
            continue
        tokens[stage] = steps * sc.batch_size * sc.grad_accum * seq
        validations = math.ceil(steps / sc.eval_every) + (steps % sc.eval_every != 0)
        stage_s[stage] = steps * cal.step_s.get(stage, 0.0) + validations * cal.val_s.get(stage, 0.0)
    baseline = cal.baseline_s * eval_scale if not cal.teacher_ft else (
        cal.baseline_s - CAL_STEPS * cal.step_s.get("finetune", 0.0)) * eval_scale + stage_s.get("finetune", 0.0)
    return Estimate(load_s=cal.load_s, eval_s=cal.eval_s * eval_scale, stage_s=stage_s,
                    efficiency_s=cal.efficiency_s, baseline_s=max(0.0, baseline), tokens=tokens)


def threshold_s(device: str) -> float:
    return THRESHOLD_S.get(device, THRESHOLD_S["cuda"])


def default_budgets(cfg: TrialConfig) -> list[str]:
    """Stages that run on the built-in token budget because the config sets neither tokens nor steps."""
    out = []
    for stage in STAGES:
        sc = getattr(cfg, stage)
        if sc.enabled and not ({"tokens", "steps"} & sc.model_fields_set):
            out.append(f"{stage} uses the default budget of {sc.tokens:,} tokens (set {stage}.tokens or {stage}.steps)")
    return out
