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

import numpy as np
import torch

from lolsearch.config import TrialConfig
from lolsearch.core.provenance import git_sha, lolsearch_version
from lolsearch.data import packed_batches
from lolsearch.models import load_model, resolve_device
from lolsearch.trial import baselines
from lolsearch.trial.distill import run_distill
from lolsearch.trial.finetune import add_lora, run_finetune
from lolsearch.trial.record import LOG_FILE, save_adapter, write_config, write_result
from lolsearch.trial.surgery import linearize, teacher_mode

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

    def to_dict(self) -> dict:
        return asdict(self)


def run_trial(
    cfg: TrialConfig, out_dir: Path | None = None, *, space: str | None = None, report: Report | None = None
) -> TrialResult:
    """Runs one trial end to end; see the module docstring. ``report`` gets intermediate metrics."""
    result = TrialResult(trial_id=cfg.trial_id, space=space, config=cfg.model_dump(mode="json"))
    result.env = environment(resolve_device(cfg.device))
    handler = _log_to(out_dir / LOG_FILE) if out_dir is not None else None
    start = time.perf_counter()
    try:
        if out_dir is not None:
            write_config(cfg, out_dir)
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


def _run(cfg: TrialConfig, result: TrialResult, out_dir: Path | None, report: Report | None) -> None:
    from lolsearch.trial import efficiency, evaluate

    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    m, timing = result.metrics, result.timing
    notify = report or (lambda _: None)

    t = time.perf_counter()
    model, tok = load_model(cfg.model, device)
    timing["load_s"] = time.perf_counter() - t

    def eval_batches() -> Iterable[dict]:
        return packed_batches(cfg.data, tok, cfg.eval.split, cfg.eval.batch_size, 0, shuffle=False,
                              num_tokens=cfg.eval.tokens, device=device)

    surgery = linearize(model, cfg.attention)
    m["linearized_layers"] = len(surgery.replaced)
    m["feature_dim"] = surgery.feature_dim
    t = time.perf_counter()
    m["ppl_swap"] = evaluate.perplexity(model, eval_batches())
    timing["eval_s"] = time.perf_counter() - t
    notify({"stage": "swap", "ppl_swap": m["ppl_swap"]})

    if cfg.distill.enabled:
        stage, weights = run_distill(model, cfg.distill, _train(cfg, tok, device, "distill"),
                                     _val(cfg, tok, device, cfg.distill), cfg.data.seq_len, notify)
        _stage_record(result, "distill", stage)
        m["layer_weights"] = weights
        m["ppl_distill"] = evaluate.perplexity(model, eval_batches())
        notify({"stage": "distill_done", "ppl_distill": m["ppl_distill"]})

    if cfg.finetune.enabled:
        model = add_lora(model, cfg.finetune.lora, cotrain_attention=cfg.cotrain_feature_maps())
        stage = run_finetune(model, cfg.finetune, _train(cfg, tok, device, "finetune"),
                             _val(cfg, tok, device, cfg.finetune), cfg.data.seq_len, notify)
        _stage_record(result, "finetune", stage)

    t = time.perf_counter()
    m["ppl"] = evaluate.perplexity(model, eval_batches())
    m.update(evaluate.teacher_agreement(model, eval_batches()))
    m["mse_eval"], m["mse_by_layer"] = evaluate.attention_mse(model, _limited(eval_batches(), cfg.eval.batch_size * 4))
    for task in cfg.eval.mc_tasks:
        m.update(evaluate.multiple_choice(model, tok, task))
    if cfg.eval.lm_eval_tasks:
        try:
            m.update(evaluate.lm_eval(model, tok, list(cfg.eval.lm_eval_tasks), cfg.eval.lm_eval_limit))
        except RuntimeError as err:
            m["lm_eval_error"] = str(err)
    timing["eval_s"] += time.perf_counter() - t

    # Teacher baselines last: a sweep precomputes them beside the first trials, so they are usually
    # ready by now; otherwise the first trial to get here computes them and the others wait on its lock.
    t = time.perf_counter()
    with teacher_mode(model):
        m.update(baselines.teacher_metrics(cfg, tok, eval_batches, device, lambda: evaluate.perplexity(model, eval_batches())))
    timing["baseline_s"] = time.perf_counter() - t
    m["ppl_ratio"] = m["ppl"] / m["ppl_teacher"]
    if "ppl_teacher_ft" in m:
        m["ppl_ratio_ft"] = m["ppl"] / m["ppl_teacher_ft"]
    notify({"stage": "eval", "ppl": m["ppl"], "ppl_ratio": m["ppl_ratio"]})
    for key in ("ppl", "ppl_ratio", "kl_teacher"):
        if not math.isfinite(m[key]):
            raise FloatingPointError(f"{key} is {m[key]}")

    t = time.perf_counter()
    fm = cfg.attention.feature_map
    proj = efficiency.feature_projection_dim(fm.kind, fm.params, efficiency.attention_shape(model.config)[3])
    kv_bytes = next(model.parameters()).element_size()
    m.update(efficiency.analytic(model.config, list(surgery.plan), surgery.feature_dim, list(cfg.efficiency.contexts),
                                 kv_dtype_bytes=kv_bytes, proj_dim=proj))
    if out_dir is not None:  # before the speed measurement: the trained weights are the trial's product
        m["adapter_bytes"] = save_adapter(model, out_dir)
    if cfg.efficiency.measure:
        try:
            m.update(efficiency.measure(model, cfg.efficiency, device, len(tok)))
        except RuntimeError as err:  # quality is measured and saved; a failed timing is recorded, not fatal
            m["efficiency_error"] = f"{type(err).__name__}: {err}".splitlines()[0][:300]
            log.error("trial %s: efficiency measurement failed: %s", cfg.trial_id, m["efficiency_error"])
    timing["efficiency_s"] = time.perf_counter() - t


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


def _stage_record(result: TrialResult, name: str, stage) -> None:
    result.curves[name] = stage.curve
    result.curves[f"{name}_eval"] = stage.eval_curve
    result.timing[f"{name}_s"] = stage.wall_s
    result.metrics[f"tokens_{name}"] = stage.tokens
    result.metrics[f"steps_{name}"] = stage.steps
    result.metrics[f"trainable_params_{name}"] = stage.trainable_params
    result.metrics[f"tok_s_{name}"] = stage.tokens / stage.wall_s if stage.wall_s else float("nan")
    if stage.best_eval is not None:
        result.metrics[f"best_eval_{name}"] = stage.best_eval


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def environment(device: torch.device) -> dict:
    """Provenance of a record: git sha, package versions, device, host, start time."""
    import peft
    import transformers

    env = {
        "git_sha": git_sha(),
        "lolsearch": lolsearch_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
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
