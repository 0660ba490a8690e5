"""The one table of the metrics a trial reports: name, unit, direction, meaning.

The space schema checks objective/constraint names against it, the reports take their axis labels and units
from it, and ``spaces/README.md`` carries it as a table (a test keeps the two equal). Families such as
``state_bytes_<N>k`` are patterns: ``<N>`` is a number, ``<stage>`` is ``distill`` or ``finetune``, ``<task>`` a
task name.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """One metric (or family). ``direction``: ``min`` (lower is better), ``max``, or ``-`` (descriptive).
    ``exact``: computed from the design's shapes and budgets, not measured, so it carries no noise."""

    name: str
    unit: str
    direction: str
    meaning: str
    exact: bool = False

    @property
    def pattern(self) -> re.Pattern[str]:
        rx = re.escape(self.name)
        for token, part in (("<N>", r"\d+"), ("<stage>", "(distill|finetune)"), ("<task>", r"\w+"),
                            ("<len>", r"\d+k?")):
            rx = rx.replace(re.escape(token), part)
        return re.compile(f"^{rx}$")


METRICS: tuple[Metric, ...] = (
    Metric("ppl_teacher", "", "min", "perplexity of the softmax teacher on the eval split"),
    Metric("ppl_teacher_ft", "", "min", "perplexity of the teacher given the same LoRA stage (once per sweep)"),
    Metric("ppl_swap", "", "min", "perplexity right after the swap, before any training"),
    Metric("ppl_distill", "", "min", "perplexity after attention transfer (stage 1)"),
    Metric("ppl", "", "min", "final perplexity of the linearized model"),
    Metric("ppl_ratio", "x", "min", "ppl / ppl_teacher"),
    Metric("ppl_ratio_ft", "x", "min", "ppl / ppl_teacher_ft: the fair ratio (LoRA helps the teacher too)"),
    Metric("kl_teacher", "nats/token", "min", "KL(teacher ‖ student) of the next-token distributions"),
    Metric("top1_agree", "fraction", "max", "share of tokens where student and teacher agree on the top-1 token"),
    Metric("mse_eval", "", "min", "attention-transfer MSE on held-out data (per-head outputs, × mse_factor)"),
    Metric("state_bytes_<N>k", "bytes", "min",
           "recurrent state + window cache per sequence at <N>K context", exact=True),
    Metric("kv_bytes_teacher_<N>k", "bytes", "-", "the teacher's KV cache per sequence at <N>K context", exact=True),
    Metric("state_ratio_<N>k", "x", "min", "state_bytes_<N>k / kv_bytes_teacher_<N>k", exact=True),
    Metric("attn_flops_per_token_<N>k", "FLOP", "min",
           "attention FLOPs per generated token at <N>K context", exact=True),
    Metric("teacher_attn_flops_per_token_<N>k", "FLOP", "-",
           "the teacher's attention FLOPs per token at <N>K", exact=True),
    Metric("prefill_tok_s_<N>", "tokens/s", "max", "measured prefill throughput at <N> tokens on the trial's device"),
    Metric("decode_tok_s", "tokens/s", "max", "measured decode throughput with the constant-size cache"),
    Metric("peak_mem_mb", "MiB", "min", "peak device memory during the efficiency measurement"),
    Metric("measured_state_bytes", "bytes", "min", "generation cache bytes measured after decoding"),
    Metric("measured_state_bytes_used", "bytes", "min", "the part of measured_state_bytes holding data"),
    Metric("measured_state_context", "tokens", "-", "context length at which the cache was measured"),
    Metric("adapter_bytes", "bytes", "min", "size of adapter.safetensors (feature maps, γ, LoRA)"),
    Metric("linearized_layers", "layers", "-", "attention layers replaced by linearized attention", exact=True),
    Metric("feature_dim", "features", "-", "feature-map output size per head", exact=True),
    Metric("attention_backend", "", "-", "kernel path of the linearized layers on the trial's device (triton, torch, "
           "reference; '+' joins several): the measured speeds are that path's", exact=True),
    Metric("tokens_<stage>", "tokens", "-", "training tokens the stage saw", exact=True),
    Metric("steps_<stage>", "steps", "-", "optimizer steps the stage ran", exact=True),
    Metric("tok_s_<stage>", "tokens/s", "max", "training throughput of the stage"),
    Metric("trainable_params_<stage>", "params", "-", "parameters the stage trained", exact=True),
    Metric("best_eval_<stage>", "", "min", "best validation loss of the stage"),
    Metric("mc_<task>_acc", "fraction", "max", "multiple-choice accuracy on a local JSONL task"),
    Metric("mc_<task>_acc_norm", "fraction", "max", "length-normalized multiple-choice accuracy"),
    Metric("lm_eval_<task>", "", "max", "an lm-eval-harness task score (needs the `eval` extra)"),
    Metric("ppl_<len>", "", "min", "final perplexity at eval length <len>"),
    Metric("ppl_ratio_<len>", "x", "min", "ppl_<len> / the teacher's perplexity at that length"),
    Metric("ppl_ratio_ft_<len>", "x", "min", "ppl_<len> / the LoRA-tuned teacher's perplexity at that length"),
    Metric("ppl_teacher_<len>", "", "-", "the teacher's perplexity at eval length <len>"),
    Metric("ppl_teacher_ft_<len>", "", "-", "the LoRA-tuned teacher's perplexity at eval length <len>"),
    Metric("kl_teacher_ft", "nats/token", "min", "KL(LoRA-tuned teacher ‖ student) of the next-token distributions"),
    Metric("passkey_<len>", "fraction", "max", "passkey retrieval accuracy at <len> tokens (mean over depths)"),
    Metric("passkey_teacher_<len>", "fraction", "-", "the teacher's passkey retrieval accuracy at <len> tokens"),
    Metric("window_share_init", "fraction", "-", "share of attention weight on window keys after the swap "
           "(mean over layers)"),
    Metric("window_share", "fraction", "-", "share of attention weight on window keys after attention transfer "
           "(mean over layers)"),
    Metric("converged_<stage>", "", "-", "the stage's validation loss improved < 1% over its last quarter"),
    Metric("final_gain_<stage>", "fraction", "-", "relative fall of the validation loss over the stage's last "
           "quarter of evaluations"),
    Metric("ppl_teacher_<task>", "", "-", "the teacher's perplexity on the extra eval dataset <task>"),
    Metric("ppl_ratio_<task>", "x", "min", "ppl_<task> / ppl_teacher_<task>"),
    Metric("ppl_<task>", "", "min", "perplexity on the extra eval dataset <task> (eval.datasets)"),
)
TRAINING_METRICS = ("loss", "eval_loss")
_BY_NAME = {m.name: m for m in METRICS}


def lookup(name: str) -> Metric | None:
    """The table entry of ``name`` (a plain name or a member of a family), else None."""
    if name in _BY_NAME:
        return _BY_NAME[name]
    return next((m for m in METRICS if "<" in m.name and m.pattern.match(name)), None)


def is_exact(name: str) -> bool:
    """True for a metric computed from the design (no noise between seeds), e.g. ``state_bytes_32k``."""
    m = lookup(name)
    return m is not None and m.exact


def plain_names() -> tuple[str, ...]:
    """Metric names without a family placeholder."""
    return tuple(m.name for m in METRICS if "<" not in m.name)


def label(name: str) -> str:
    """Axis/column label: the meaning with its unit, e.g. ``KL(teacher ‖ student) ... [nats/token]``."""
    m = lookup(name)
    if m is None:
        return name
    unit = {"bytes": ""}.get(m.unit, m.unit)  # byte axes get KiB/MiB/GiB from the values
    return f"{name}: {m.meaning}" + (f" [{unit}]" if unit and unit != "x" else "")


def format_metric(name: str, value: object, digits: int = 4) -> str:
    """A metric value as a short cell: bytes in KiB/MiB/GiB, counts with k/M/G, else ``digits`` significant
    figures; ``-`` when missing or not a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    m = lookup(name)
    unit = m.unit if m is not None else ""
    if unit == "bytes":
        return format_bytes(float(value))
    if unit in ("FLOP", "params", "tokens") and abs(value) >= 1e4:
        return _si(float(value))
    return f"{value:.{digits}g}"


def format_bytes(n: float) -> str:
    for power, name in ((30, "GiB"), (20, "MiB"), (10, "KiB")):
        if abs(n) >= 2.0**power:
            return f"{n / 2.0**power:.3g} {name}"
    return f"{n:.0f} B"


def _si(x: float) -> str:
    for power, name in ((12, "T"), (9, "G"), (6, "M"), (3, "k")):
        if abs(x) >= 10.0**power:
            return f"{x / 10.0**power:.3g}{name}"
    return f"{x:.3g}"


def markdown_table() -> str:
    """The table as Markdown (``spaces/README.md`` holds exactly this between its metric-table markers)."""
    rows = ["| metric | unit | better | meaning |", "|---|---|---|---|"]
    arrows = {"min": "lower", "max": "higher", "-": "-"}
    for m in METRICS:
        rows.append(f"| `{m.name}` | {m.unit or '-'} | {arrows[m.direction]} | {m.meaning} |")
    return "\n".join(rows) + "\n"
