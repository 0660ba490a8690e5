"""``run_trial``: the one function a sweep calls. Teacher → linearize → attention transfer → LoRA →
quality → efficiency → :class:`TrialResult` (and, with ``out_dir``, result.json + adapter on disk).

It reads no globals, environment or argv (the model/data cache location aside), works without Ray,
and never raises for a failing trial: the record says ``failed`` and why.
"""

from __future__ import annotations

import logging
import math
import platform
import random
import socket
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lolsearch.config import TrialConfig, design_id
from lolsearch.core.provenance import git_sha, kernel_settings, lolsearch_version
from lolsearch.data import packed_batches
from lolsearch.models import resolve_device
from lolsearch.trial import baselines, efficiency, eval_pass, evaluate, kernel_check, quality
from lolsearch.trial import cache as trial_cache
from lolsearch.trial.convergence import stage_convergence
from lolsearch.trial.distill import run_distill
from lolsearch.trial.finetune import add_lora, run_finetune
from lolsearch.trial.record import LOG_FILE, save_adapter, write_config, write_result
from lolsearch.trial.softmax_probe import linearize_by_rule
from lolsearch.trial.surgery import SurgeryReport, teacher_mode

log = logging.getLogger(__name__)
Report = Callable[[dict], None]


@dataclass
class TrialResult:
    """The record of one trial (``result.json``)."""

    trial_id: str
    space: str | None
    config: dict
    status: str = "ok"
    error: str | None = None
    metrics: dict = field(default_factory=dict)
    curves: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)
    block: str | None = None  # the space's grid block ("main" or an extra_grids name); None outside a sweep
    design_id: str | None = None  # the config's hash without its seed: replicates of one design share it

    def to_dict(self) -> dict:
        return asdict(self)


def run_trial(
    cfg: TrialConfig, out_dir: Path | None = None, *, space: str | None = None, report: Report | None = None,
    block: str | None = None,
) -> TrialResult:
    """Runs one trial end to end; see the module docstring. ``report`` gets intermediate metrics; ``block`` (the
    space's grid block of the point) is recorded for the report's ablations."""
    result = TrialResult(trial_id=cfg.trial_id, space=space, config=cfg.model_dump(mode="json"), block=block,
                         design_id=design_id(cfg))
    result.env = environment(resolve_device(cfg.device))
    handler = _log_to(out_dir / LOG_FILE) if out_dir is not None else None
    start = time.perf_counter()
    try:
        if out_dir is not None:
            write_config(cfg, out_dir)  # an atomic, fsynced write: seconds on a busy disk
            result.timing["record_s"] = time.perf_counter() - start
        _run(cfg, result, out_dir, report)
    except Exception as err:  # a failing trial is data, not a crash of the sweep
        result.status = "failed"
        result.error = f"{type(err).__name__}: {err}".splitlines()[0][:500]
        log.error("trial %s failed: %s\n%s", cfg.trial_id, result.error, traceback.format_exc())
    finally:
        result.timing["total_s"] = time.perf_counter() - start
        if handler is not None:
            logging.getLogger("lolsearch").removeHandler(handler)
            handler.close()
    if out_dir is not None:
        write_result(out_dir, result.to_dict())
    return result


@dataclass
class TrialState:
    """What the stages of one trial hand on to each other."""

    cfg: TrialConfig
    result: TrialResult
    out_dir: Path | None
    notify: Report
    device: torch.device
    model: nn.Module | None = None
    tokenizer: Any = None
    surgery: SurgeryReport | None = None

    @property
    def metrics(self) -> dict:
        return self.result.metrics

    def eval_batches(self) -> Iterable[dict]:
        cfg = self.cfg
        return packed_batches(cfg.data, self.tokenizer, cfg.eval.split, cfg.eval.batch_size, 0, shuffle=False,
                              num_tokens=cfg.eval.tokens, mask_prompt=True, device=self.device)


def _load(s: TrialState) -> None:
    t = time.perf_counter()
    s.model, s.tokenizer = trial_cache.teacher(s.cfg.model, s.device)  # a copy when this process loaded it before
    s.result.timing["load_s"] = time.perf_counter() - t


def _swap(s: TrialState) -> None:
    cfg = s.cfg
    t = time.perf_counter()
    rule = cfg.attention.softmax_rule if cfg.attention.softmax_rule and cfg.attention.softmax_rule.top_mse else None
    probe = _limited(_train(cfg, s.tokenizer, s.device, "distill"), rule.probe_batches) if rule else ()
    s.surgery, chosen, probe_mse = linearize_by_rule(s.model, cfg.attention, probe)
    t_check = time.perf_counter()
    s.metrics.update(kernel_check.check_model(s.model, kernel_check.trial_shapes(cfg)))  # before training and evaluations
    s.result.timing["kernel_check_s"] = time.perf_counter() - t_check
    if rule is not None:
        s.metrics["softmax_layers_chosen"] = chosen
        s.metrics["probe_mse_by_layer"] = {str(i): v for i, v in probe_mse.items()}
        s.metrics["softmax_layers"] = list(s.surgery.kept_softmax)  # the final plan: explicit + chosen
    s.metrics["linearized_layers"] = len(s.surgery.replaced)
    s.metrics["feature_dim"] = s.surgery.feature_dim
    s.metrics["attention_backend"] = s.surgery.backend
    s.result.timing["swap_s"] = time.perf_counter() - t  # the probe (softmax_rule), the surgery, the kernel check
    t = time.perf_counter()
    s.metrics["ppl_swap"] = evaluate.perplexity(s.model, s.eval_batches(), cfg.eval.cuda_graph)
    s.metrics.update(quality.window_shares(s.cfg, s.model, s.eval_batches(), "init_"))
    s.result.timing["eval_s"] = s.result.timing["swap_eval_s"] = time.perf_counter() - t
    s.notify({"stage": "swap", "ppl_swap": s.metrics["ppl_swap"]})


def _distill(s: TrialState) -> None:
    cfg = s.cfg
    if not cfg.distill.enabled:
        return
    t = time.perf_counter()
    stage, weights = run_distill(s.model, cfg.distill, _train(cfg, s.tokenizer, s.device, "distill"),
                                 _val(cfg, s.tokenizer, s.device, cfg.distill), cfg.data.seq_len, s.notify)
    _stage_record(s.result, "distill", stage, time.perf_counter() - t)
    s.metrics["layer_weights"] = weights
    t = time.perf_counter()
    s.metrics["ppl_distill"] = evaluate.perplexity(s.model, s.eval_batches(), cfg.eval.cuda_graph)
    s.metrics.update(quality.window_shares(cfg, s.model, s.eval_batches(), ""))
    s.result.timing["distill_eval_s"] = time.perf_counter() - t
    s.notify({"stage": "distill_done", "ppl_distill": s.metrics["ppl_distill"]})


def _finetune(s: TrialState) -> None:
    cfg = s.cfg
    if not cfg.finetune.enabled:
        return
    t = time.perf_counter()
    s.model = add_lora(s.model, cfg.finetune.lora, cotrain_attention=cfg.cotrain_feature_maps(),
                       softmax_layers=s.surgery.kept_softmax)
    stage = run_finetune(s.model, cfg.finetune, _train(cfg, s.tokenizer, s.device, "finetune"),
                         _val(cfg, s.tokenizer, s.device, cfg.finetune), cfg.data.seq_len, s.notify)
    _stage_record(s.result, "finetune", stage, time.perf_counter() - t)


def _quality(s: TrialState) -> None:
    """The final evaluation. Its time is ``final_eval_s``, and each part's is ``final_eval_<part>_s``: the fixed
    cost of a trial is mostly evaluation, and these say which part (issue 16)."""
    cfg, m, model = s.cfg, s.metrics, s.model
    start = time.perf_counter()

    def part(name: str, metrics: Callable[[], dict]) -> None:
        t = time.perf_counter()
        m.update(metrics())
        s.result.timing[f"final_eval_{name}_s"] = time.perf_counter() - t

    part("main", lambda: eval_pass.trial_final_eval(cfg, model, s.eval_batches, s.device, s.out_dir))  # ppl, kl, top1
    part("lengths", lambda: quality.other_lengths(cfg, model, s.tokenizer, s.device))
    part("datasets", lambda: quality.other_datasets(cfg, model, s.tokenizer, s.device))
    part("passkey", lambda: quality.passkey_metrics(cfg, model, s.tokenizer))
    part("mse", lambda: dict(zip(("mse_eval", "mse_by_layer"), evaluate.attention_mse(
        model, _limited(s.eval_batches(), cfg.eval.batch_size * 4), cfg.eval.cuda_graph), strict=True)))
    part("tasks", lambda: _tasks(cfg, model, s.tokenizer))
    s.result.timing["final_eval_s"] = time.perf_counter() - start
    s.result.timing["eval_s"] += s.result.timing["final_eval_s"]


def _tasks(cfg: TrialConfig, model: nn.Module, tokenizer) -> dict:
    """Multiple-choice and lm-eval tasks (``eval.mc_tasks``, ``eval.lm_eval_tasks``); an lm-eval failure is recorded."""
    out: dict = {}
    for task in cfg.eval.mc_tasks:
        out.update(evaluate.multiple_choice(model, tokenizer, task))
    if cfg.eval.lm_eval_tasks:
        try:
            out.update(evaluate.lm_eval(model, tokenizer, list(cfg.eval.lm_eval_tasks), cfg.eval.lm_eval_limit))
        except RuntimeError as err:
            out["lm_eval_error"] = str(err)
    return out


def _teacher_baselines(s: TrialState) -> None:
    """Teacher baselines come after the student's evaluation: a sweep precomputes them beside the first trials,
    so they are usually ready by now; otherwise the first trial here computes them and the others wait on its lock."""
    m, model = s.metrics, s.model
    t = time.perf_counter()
    with teacher_mode(model):
        m.update(baselines.teacher_metrics(s.cfg, s.tokenizer, s.eval_batches, s.device,
                                           lambda: evaluate.perplexity(model, s.eval_batches(), s.cfg.eval.cuda_graph)))
    m["ppl_ratio"] = m["ppl"] / m["ppl_teacher"]
    if "ppl_teacher_ft" in m:
        m["ppl_ratio_ft"] = m["ppl"] / m["ppl_teacher_ft"]
        for n in s.cfg.eval.seq_lens:
            if f"ppl_{n}" in m and f"ppl_teacher_ft_{n}" in m:  # absent when the split is shorter than n
                m[f"ppl_ratio_ft_{n}"] = m[f"ppl_{n}"] / m[f"ppl_teacher_ft_{n}"]
        if "kl_teacher_ft" not in m and "kl_teacher_ft_error" not in m:  # its adapter was not cached at _quality
            try:
                m["kl_teacher_ft"] = baselines.kl_teacher_ft(s.cfg, model, s.eval_batches, s.device)
            except (OSError, RuntimeError, ValueError) as err:  # the student's numbers stand without it
                m["kl_teacher_ft_error"] = f"{type(err).__name__}: {err}".splitlines()[0][:300]
    s.result.timing["baseline_s"] = time.perf_counter() - t  # the late kl_teacher_ft included: it loads a teacher
    s.notify({"stage": "eval", "ppl": m["ppl"], "ppl_ratio": m["ppl_ratio"]})
    for key in ("ppl", "ppl_ratio", "kl_teacher"):
        if not math.isfinite(m[key]):
            raise FloatingPointError(f"{key} is {m[key]}")


def _efficiency(s: TrialState) -> None:
    cfg, m, model = s.cfg, s.metrics, s.model
    t = time.perf_counter()
    fm = cfg.attention.feature_map
    proj = efficiency.feature_projection_dim(fm.kind, fm.params, efficiency.attention_shape(model.config)[3])
    kv_bytes = next(model.parameters()).element_size()
    m.update(efficiency.analytic(model.config, list(s.surgery.plan), s.surgery.feature_dim,
                                 list(cfg.efficiency.contexts), kv_dtype_bytes=kv_bytes, proj_dim=proj))
    if s.out_dir is not None:  # before the speed measurement: the trained weights are the trial's product
        m["adapter_bytes"] = save_adapter(model, s.out_dir)
    if cfg.efficiency.measure:
        try:
            got, m["efficiency_cached"] = trial_cache.efficiency(model, cfg.efficiency, s.device, len(s.tokenizer),
                                                                 efficiency.measure)  # once per design shape
            m.update(got)
        except RuntimeError as err:  # quality is measured and saved; a failed timing is recorded, not fatal
            m["efficiency_error"] = f"{type(err).__name__}: {err}".splitlines()[0][:300]
            log.error("trial %s: efficiency measurement failed: %s", cfg.trial_id, m["efficiency_error"])
    s.result.timing["efficiency_s"] = time.perf_counter() - t


#: The stages of a trial, in order; each reads and extends the :class:`TrialState`.
STAGES: tuple[Callable[[TrialState], None], ...] = (
    _load, _swap, _distill, _finetune, _quality, _teacher_baselines, _efficiency,
)


def _run(cfg: TrialConfig, result: TrialResult, out_dir: Path | None, report: Report | None) -> None:
    seed_everything(cfg.seed)
    state = TrialState(cfg, result, out_dir, report or (lambda _: None), resolve_device(cfg.device))
    for stage in STAGES:
        stage(state)


def _limited(batches: Iterable[dict], max_batches: int) -> Iterable[dict]:
    for i, b in enumerate(batches):
        if i >= max_batches:
            return
        yield b


def _train(cfg: TrialConfig, tok, device, stage: str):
    """Training batches of one stage; each stage gets its own seeded order (prompt tokens masked for LoRA)."""
    return packed_batches(cfg.data, tok, "train", getattr(cfg, stage).batch_size, cfg.data_seed(stage),
                          mask_prompt=stage == "finetune", device=device)


def _val(cfg: TrialConfig, tok, device, stage) -> Callable[[], Iterable[dict]]:
    tokens = stage.eval_batches * stage.batch_size * cfg.data.seq_len
    return lambda: packed_batches(cfg.data, tok, "val", stage.batch_size, 0, shuffle=False, num_tokens=tokens,
                                  mask_prompt=True, device=device)


def _stage_record(result: TrialResult, name: str, stage, elapsed_s: float) -> None:
    """Records a finished stage; ``elapsed_s`` is its whole call, so ``<name>_setup_s`` is what came around the
    training loop (``<name>_s``): the adapters' injection, the optimizer, the layer weights' measurement."""
    result.curves[name] = stage.curve
    result.curves[f"{name}_eval"] = stage.eval_curve
    result.timing[f"{name}_s"] = stage.wall_s
    result.timing[f"{name}_setup_s"] = max(0.0, elapsed_s - stage.wall_s)
    result.metrics[f"tokens_{name}"] = stage.tokens
    result.metrics[f"steps_{name}"] = stage.steps
    result.metrics[f"trainable_params_{name}"] = stage.trainable_params
    result.metrics[f"tok_s_{name}"] = stage.tokens / stage.wall_s if stage.wall_s else float("nan")
    if stage.best_eval is not None:
        result.metrics[f"best_eval_{name}"] = stage.best_eval
    result.metrics.update({f"{k}_{name}": v for k, v in stage_convergence(stage.eval_curve).items()})


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def environment(device: torch.device) -> dict:
    """Provenance of a record: git sha, package versions, kernel settings, device, host, start time."""
    import peft
    import transformers

    env = {
        "git_sha": git_sha(),
        "lolsearch": lolsearch_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
        **kernel_settings(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "hostname": socket.gethostname(),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return env


def _log_to(path: Path) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    lg = logging.getLogger("lolsearch")
    lg.addHandler(handler)
    if lg.level == logging.NOTSET or lg.level > logging.INFO:
        lg.setLevel(logging.INFO)
    return handler
