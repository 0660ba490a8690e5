"""Whole-model performance benchmarks (not tests): ratios measured side by side in one run.

    python -m lolsearch.perf train    [--seq 1024 4096] [--backends triton reference torch] [--loss-chunk-tokens 0 4096]
                                      [--recompute-features off on] [--checkpoint-layers off on] [--fused-features off on]
                                      [--lora-compute float32 model]
    python -m lolsearch.perf generate [--design TRIAL_DIR] [--contexts 8192 32768] [--batch 64] [--batches 1 16 256] [--graph both] [--budget-s 200]
    python -m lolsearch.perf scaling  SPACE --gpus 1 4 [--trials-per-gpu 1 2 4]
    python -m lolsearch.perf fixed    [--config TRIAL.yaml] [--trials 3] [--cold N] [--set K=V] [--variant K=V]
    python -m lolsearch.perf eval     [--config TRIAL.yaml] [--repeats 3]

``train``: attention-transfer and LoRA-stage tokens/s and peak memory per attention backend on the
same model, data and batches (8 sequences per step by default, as in the trials; `--micro-batch 1 --accum 8`
splits them). ``--cuda-graph off on``: each stage with and without the CUDA-graph step; ``steady_tok_s`` omits the
steps up to the first loss read-back at step >= 2 (the graph's eager step and capture): use ``--steps`` >> ``--sync-every``.
``generate``: decode tokens/s of the linearized model (``--graph on``: whole-model CUDA-graph step; ``off``: HF
forward per step) vs the softmax teacher (HF SDPA + DynamicCache) per context at ``--batch`` and per ``--batches``
at ``--batch-context``, and the largest batch each can decode at the largest context. The caches are built
at the target context directly (random keys/values and states), which costs what a prefilled cache
costs in memory and per-step time, without paying for the prefill.
``scaling``: wall time of the same sweep on 1 GPU and on N GPUs.
Each writes ``<name>.csv`` and appends its table to ``perf.md`` under ``--out`` (default results/perf).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import torch

from lolsearch.config import AttentionConfig, DataConfig, LoraOptions, ModelConfig
from lolsearch.core import kernel_env
from lolsearch.core.errors import ConfigError

log = logging.getLogger(__name__)


def train_throughput(model_cfg: ModelConfig, data_cfg: DataConfig, attention: AttentionConfig, device: torch.device,
                     micro_batch: int = 8, accum: int = 1, steps: int = 3, warmup: int = 1,
                     compile_modes: tuple[str, ...] = ("off",), stages: tuple[str, ...] = ("attention_transfer", "lora"),
                     sync_every: int | None = None, check: bool = False, profile_dir: Path | None = None,
                     graph_modes: tuple[bool, ...] = (False,), loss_chunks: tuple[int, ...] = (),
                     settings: dict[str, tuple[str, ...]] | None = None) -> list[dict]:
    """Tokens/s and peak GiB of the attention-transfer and LoRA steps as trials run them (``run_stage``).

    Stages: ``attention_transfer`` and ``lora`` on the linearized model, ``teacher_lora`` (the softmax teacher's own
    LoRA step) on a fresh copy, ``attention_free_lora`` (that step with no attention core, a bound for both). Each
    stage is timed once per ``compile_modes`` × ``graph_modes`` (``cuda_graph``) entry; with ``check`` the first 3
    steps' losses of each mode are compared with the eager path (``fast_rel_diff``).
    ``loss_chunks``: the LoRA stages once per ``finetune.loss_chunk_tokens`` value (0: the whole batch), in a
    ``loss_chunk`` column. ``settings``: column -> values, each stage it applies to timed once per value, in that
    column: ``recompute`` (``recompute_features`` off/on) and ``fused_features`` (the feature maps' fused kernels
    off/on) on the linearized model's stages, ``checkpoint_layers`` (off/on) and ``lora_compute``
    (``finetune.lora.compute_dtype``) on the LoRA stages."""
    from lolsearch.attention.layer import DistillRecorder
    from lolsearch.config import FinetuneConfig
    from lolsearch.data import packed_batches
    from lolsearch.models import load_model
    from lolsearch.trial.distill import layer_losses
    from lolsearch.trial.finetune import add_lora, lm_loss, lora_compute, lora_compute_of
    from lolsearch.trial.speed import attention_free, check_fast_path, is_oom, profile_stage, reset_mem, time_stage
    from lolsearch.trial.surgery import (
        attention_parameters,
        checkpointed_layers,
        compile_targets,
        fused_features,
        linearize,
        linearized_layers,
        recomputed_features,
    )

    rows: list[dict] = []
    base = {"model": model_cfg.source, "backend": attention.backend, "seq_len": data_cfg.seq_len,
            "batch": f"{micro_batch}x{accum}", "layout": layout_label(attention),
            "device": _device_name(device)}
    cfg = FinetuneConfig(steps=1, batch_size=micro_batch, grad_accum=accum, lr=1e-4, sync_every=sync_every)

    def batches_of(tok):
        return lambda: packed_batches(data_cfg, tok, "train", micro_batch, 0, device=device)

    contexts = {  # each optional setting: (applies to the linearized model's stages / to the LoRA stages, context)
        "recompute": ("linear", lambda m, v: recomputed_features(m, v == "on")),
        "fused_features": ("linear", lambda m, v: fused_features(m, v == "on")),
        "checkpoint_layers": ("lora", lambda m, v: checkpointed_layers(m, v == "on")),
        "lora_compute": ("lora", lora_compute),
    }
    unknown = set(settings or {}) - set(contexts)
    if unknown:
        raise ValueError(f"unknown perf settings {sorted(unknown)} (known: {sorted(contexts)})")

    def measure(name: str, params: list, loss_of: Callable[[int | None], Callable[[dict], torch.Tensor]], batches,
                targets: list, model: torch.nn.Module, chunks: tuple[int, ...] = (), lora: bool = False) -> None:
        kinds = {"linear"} if any(True for _ in linearized_layers(model)) else set()
        kinds |= {"lora"} if lora else set()
        mine = {col: values for col, values in (settings or {}).items() if contexts[col][0] in kinds and values}
        for mode, graph, chunk, *chosen in itertools.product(compile_modes, graph_modes, chunks or (None,),
                                                             *mine.values()):
            stage_cfg = cfg.model_copy(update={"compile": mode, "cuda_graph": graph})
            mods = targets if mode != "off" else []
            loss_fn = loss_of(chunk or None)
            row = {**base, "stage": name, "compile": mode, "cuda_graph": "on" if graph else "off"}
            if chunk is not None:
                row["loss_chunk"] = chunk
            row.update(zip(mine, chosen, strict=True))
            if "linear" in kinds and "fused_features" not in mine:  # the settings in effect where not varied
                row["fused_features"] = "on" if any(m.fused_maps(device) for m in linearized_layers(model)) else "off"
            if lora and "lora_compute" not in mine:
                row["lora_compute"] = lora_compute_of(model)
            reset_mem(device)

            @contextlib.contextmanager
            def applied(chosen: tuple = tuple(chosen)) -> Iterator[None]:
                with contextlib.ExitStack() as stack:
                    for col, value in zip(mine, chosen, strict=True):
                        stack.enter_context(contexts[col][1](model, value))
                    yield

            try:
                with applied():
                    row.update(time_stage(name, params, loss_fn, batches(), stage_cfg, data_cfg.seq_len, device,
                                          steps=steps, warmup=warmup, compile_modules=mods), status="ok")
                if check:  # the row's settings and speed path against the plain eager path
                    got = check_fast_path(name, params, loss_fn, batches, stage_cfg, data_cfg.seq_len,
                                          compile_modules=mods, fast_setting=applied)
                    row["fast_rel_diff"] = got["max_rel_diff"]
                if profile_dir is not None:
                    with applied():
                        profile_stage(name, params, loss_fn, batches(), stage_cfg, data_cfg.seq_len,
                                      profile_dir / f"profile_{name}_{mode}{'_graph' if graph else ''}"
                                      f"{''.join(f'_{c}_{v}' for c, v in zip(mine, chosen, strict=True))}.txt",
                                      compile_modules=mods)
            except Exception as err:  # noqa: BLE001 - an OOM or a compile failure is a row, not the end of the run
                status = "oom" if is_oom(err) else f"error: {type(err).__name__}: {err}".splitlines()[0][:300]
                log.exception("%s compile=%s cuda_graph=%s: %s", name, mode, graph, status)
                nan = float("nan")
                row.update(tok_s=nan, steady_tok_s=nan, step_s=nan, peak_gib=nan, warmup_s=nan, status=status)
            rows.append(row)
            log.info("%s", row)
            reset_mem(device)

    for name in ("teacher_lora", "attention_free_lora"):  # the second: a bound for any attention (attention_free)
        if name in stages:
            teacher, tok = load_model(model_cfg, device)
            teacher = add_lora(teacher, LoraOptions(), cotrain_attention=False).train()
            with attention_free(teacher) if name == "attention_free_lora" else contextlib.nullcontext():
                measure(name, [p for p in teacher.parameters() if p.requires_grad],
                        lambda c, t=teacher: lambda b: lm_loss(t, b, c), batches_of(tok), compile_targets(teacher),
                        teacher, loss_chunks, lora=True)
            del teacher
            reset_mem(device)
    if not {"attention_transfer", "lora"} & set(stages):
        return rows
    model, tok = load_model(model_cfg, device)
    linearize(model, attention)
    recorder = DistillRecorder()

    def distill_loss(batch: dict) -> torch.Tensor:
        _, mse, _ = layer_losses(model, batch, recorder)
        return 1000 * sum(mse) / len(mse)

    model.train()
    if "attention_transfer" in stages:
        measure("attention_transfer", attention_parameters(model), lambda _: distill_loss, batches_of(tok),
                compile_targets(model), model)
    if "lora" in stages:
        peft_model = add_lora(model, LoraOptions(), cotrain_attention=False)
        peft_model.train()
        measure("lora", [p for p in peft_model.parameters() if p.requires_grad],
                lambda c: lambda b: lm_loss(peft_model, b, c), batches_of(tok), compile_targets(peft_model), peft_model,
                loss_chunks, lora=True)
    return rows


def cmd_train(args: argparse.Namespace) -> pd.DataFrame:
    from lolsearch.trial.speed import has_steady_window
    from lolsearch.trial.train import read_back_interval

    device = torch.device(args.device)
    every = read_back_interval(args.sync_every, device.type == "cuda")
    if not has_steady_window(args.steps, every):
        log.warning("--steps %d with a loss read-back every %d steps leaves no read-back between step 2 and the last: "
                    "steady_tok_s will be NaN and tok_s includes the first step (and a CUDA graph's capture); raise "
                    "--steps or lower --sync-every", args.steps, every)
    rows = []
    for seq in args.seq:
        for backend in args.backends:
            att = _attention(args, backend)
            data = DataConfig(source="shakespeare", seq_len=seq)
            log.info("train throughput: backend %s seq %d", backend, seq)
            rows += train_throughput(ModelConfig(source=args.model), data, att, device, micro_batch=args.micro_batch,
                                     accum=args.accum, steps=args.steps, warmup=args.warmup,
                                     compile_modes=tuple(args.compile), stages=tuple(args.stages),
                                     sync_every=args.sync_every, check=args.check,
                                     profile_dir=args.out if args.profile else None,
                                     graph_modes=tuple(m == "on" for m in args.cuda_graph),
                                     loss_chunks=tuple(args.loss_chunk_tokens or ()),
                                     settings={"recompute": tuple(args.recompute_features or ()),
                                               "checkpoint_layers": tuple(args.checkpoint_layers or ()),
                                               "fused_features": tuple(args.fused_features or ()),
                                               "lora_compute": tuple(args.lora_compute or ())})
    df = pd.DataFrame(rows)
    settings = []  # the optional setting columns, part of every ratio's key
    if "loss_chunk" in df:  # attention transfer has no next-token loss: '-'
        df["loss_chunk"] = df["loss_chunk"].map(lambda v: "-" if pd.isna(v) else int(v))
        settings.append("loss_chunk")
    if "recompute" in df:  # the teacher has no feature maps: '-'
        df["recompute"] = df["recompute"].fillna("-")
        settings.append("recompute")
    varied = {"checkpoint_layers": True, "fused_features": bool(args.fused_features), "lora_compute": bool(args.lora_compute)}
    for col, is_varied in varied.items():  # attention transfer has no LoRA step, the teacher no feature maps: '-'
        if col in df:  # recorded in every row; a key of the ratios where the run varied it
            df[col] = df[col].fillna("-")
            settings += [col] if is_varied else []
    _ratios(df, "tok_s", "backend", args.backends[0], ["seq_len", "stage", "compile", "cuda_graph", *settings],
            higher_better=True)
    if "on" in args.cuda_graph and "status" in df:  # on_speedup: the graphed step's tok_s over this row's
        _ratios(df, "tok_s", "cuda_graph", "on", ["backend", "seq_len", "stage", "compile", *settings],
                higher_better=True)
    if "fused_features" in settings:  # fused_speedup: the fused feature maps' tok_s over this row's
        _ratios(df, "tok_s", "fused_features", "on",
                ["backend", "seq_len", "stage", "compile", "cuda_graph", *(c for c in settings if c != "fused_features")],
                higher_better=True, name="fused_speedup")
    if "lora_compute" in settings:  # lora_compute_speedup: the LoRA products in the model's dtype, over this row's
        _ratios(df, "tok_s", "lora_compute", "model",
                ["backend", "seq_len", "stage", "compile", "cuda_graph", *(c for c in settings if c != "lora_compute")],
                higher_better=True, name="lora_compute_speedup")
    return df


def cmd_generate(args: argparse.Namespace) -> pd.DataFrame:
    """Decode tokens/s of teacher and linearized model per (context, batch) point (``trial.decode_speed``)."""
    from lolsearch.models import load_model
    from lolsearch.trial.decode_speed import generate_rows, sweep_points
    from lolsearch.trial.surgery import linearize

    device = torch.device(args.device)
    attention = _attention(args, args.backend)
    teacher, tok = load_model(ModelConfig(source=args.model), device)
    student, _ = load_model(ModelConfig(source=args.model), device)
    linearize(student, attention)
    modes = ("off", "on") if args.graph == "both" else (args.graph,)
    batch_context = args.batch_context or max(args.contexts)
    rows = generate_rows(teacher, student, len(tok), device,
                         sweep_points(args.contexts, args.batch, args.batches or [], batch_context),
                         steps=args.steps, graph_modes=modes, budget_s=args.budget_s,
                         max_batch_limit=args.max_batch_limit, max_batch_point=(max(args.contexts), args.batch),
                         profile_dir=args.out if args.profile else None, device_name=_device_name(device))
    df = pd.DataFrame(rows)
    _ratios(df, "decode_tok_s", "model", "linearized", ["context", "batch"], higher_better=True)
    return df


def cmd_scaling(args: argparse.Namespace) -> pd.DataFrame:
    """Wall time of the same sweep per (GPUs, trials per GPU) (:func:`lolsearch.sweep.scaling.scaling_rows`)."""
    from lolsearch.sweep.scaling import scaling_rows

    rows = scaling_rows(args.space, args.gpus, args.trials_per_gpu, args.work)
    df = pd.DataFrame(rows)
    base = df.iloc[0]
    df["speedup"] = base["wall_s"] / df["wall_s"]
    df["efficiency_vs_linear"] = df["speedup"] / (df["gpus"] / base["gpus"])
    df["trials_per_hour"] = 3600 * df["trials_ok"] / df["wall_s"]
    return df


FIXED_TOY = {"model": {"source": "toy-llama"}, "data": {"source": "shakespeare", "seq_len": 128},  # a short trial
    "attention": {"feature_map": {"kind": "hedgehog", "params": {"feature_dim": 16}}, "window": 16},
    **{stage: {"steps": 20, "batch_size": 8, "eval_every": 10, "eval_batches": 2} for stage in ("distill", "finetune")},
    "eval": {"tokens": 8192, "batch_size": 8},
}


def cmd_fixed(args: argparse.Namespace) -> pd.DataFrame:
    """Fixed cost per trial: the same trial in one process, ``--cold`` times with the caches emptied first, then
    ``--trials`` times warm; with ``--variant``, each warm trial is followed by one under those overrides."""
    from lolsearch.config import load_yaml
    from lolsearch.config.io import parse_with_overrides
    from lolsearch.trial.speed import fixed_costs

    data = load_yaml(args.config) if args.config else {**FIXED_TOY, "model": {"source": args.model or "toy-llama"}}
    data, file = {**data, "device": args.device}, str(args.config or "<toy>")
    cfg = parse_with_overrides(data, args.set, file)
    variants = [("", cfg)] + ([(" ".join(args.variant), parse_with_overrides(data, args.set + args.variant, file))]
                              if args.variant else [])
    rows = fixed_costs(cfg, args.trials if args.cold is None else args.cold, cold=True)
    for i in range(args.trials):
        rows += [{**r, "trial": i, "variant": name} for name, c in variants for r in fixed_costs(c, 1, cold=False)]
    df = pd.DataFrame(rows)
    df.insert(0, "model", cfg.model.source)
    df["device"] = _device_name(torch.device(args.device))
    df["tok_s"] = df["train_tokens"] / df["train_s"]
    df["fixed_vs_1m_1m"] = df["fixed_s"] / (2_000_000 / df["tok_s"])  # fixed cost over a 1M + 1M-token trial's training
    return df


def cmd_eval(args: argparse.Namespace) -> pd.DataFrame:
    """The final evaluation as separate passes vs one pass, on the ``fixed`` command's trial (or ``--config``)."""
    from lolsearch.config import load_yaml, parse_trial_config
    from lolsearch.trial.speed import eval_costs

    data = load_yaml(args.config) if args.config else {**FIXED_TOY, "model": {"source": args.model or "toy-llama"}}
    df = pd.DataFrame(eval_costs(parse_trial_config({**data, "device": args.device}, str(args.config or "<toy>")),
                                 args.repeats))
    df.insert(0, "model", args.model or "toy-llama")
    df["device"] = _device_name(torch.device(args.device))
    return df


def _ratios(df: pd.DataFrame, col: str, by: str, ref: str, keys: list[str], higher_better: bool,
            name: str | None = None) -> None:
    """Adds a column ``name`` (default ``<ref>_speedup``): ``ref``'s value over each row's (or the inverse)."""
    if df.empty:
        return
    refs = df[df[by] == ref].set_index(keys)[col]
    refs = refs[~refs.index.duplicated()]  # a setting timed twice (e.g. --compile off default off): the first
    ratio = []
    for _, row in df.iterrows():
        key = tuple(row[k] for k in keys) if len(keys) > 1 else row[keys[0]]
        r = refs.get(key, float("nan"))
        ratio.append(r / row[col] if higher_better else row[col] / r)
    df[name or f"{ref}_speedup"] = ratio


def layout_label(attention: AttentionConfig) -> str:
    """The ``layout`` column: layout and window (``sliding64``), a schedule's ends (``sliding32-512``), softmax layers."""
    sched = attention.window_schedule
    window = f"{sched.first}-{sched.last}" if sched is not None else f"{attention.window}"
    kept = f"+softmax{','.join(map(str, attention.softmax_layers))}" if attention.softmax_layers else ""
    return f"{attention.layout}{window}{kept}"


def _attention(args: argparse.Namespace, backend: str) -> AttentionConfig:
    """The design to time: ``--design``'s attention section (a probe's choice replaced by the layers it kept),
    else ``--layout``/``--window``/``--softmax-layers``; ``backend`` either way."""
    if args.design is not None:
        from lolsearch.trial.record import read_config, resolved_config

        attention = resolved_config(read_config(args.design), args.design).attention
        return attention.model_copy(update={"backend": backend})
    return AttentionConfig(layout=args.layout, window=args.window, backend=backend,
                           softmax_layers=tuple(args.softmax_layers))


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lolsearch.perf", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/perf"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default=None, help="model source (default: smollm2-135m; fixed: toy-llama)")
    parser.add_argument("--layout", default="sliding")
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--softmax-layers", type=lambda v: [int(x) for x in v.split(",") if x], default=[],
                        help="layers kept as softmax, comma-separated (e.g. 23,24,28)")
    parser.add_argument("--design", type=Path, default=None,
                        help="a trial folder (config.yaml, result.json): time its attention design (feature map, "
                             "windows, softmax layers) instead of --layout/--window/--softmax-layers")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("train")
    p.add_argument("--seq", type=int, nargs="+", default=[1024, 4096])
    p.add_argument("--backends", nargs="+", default=["triton", "reference"])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--micro-batch", type=int, default=8, help="sequences per forward (the trials use 8)")
    p.add_argument("--accum", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (compilation, autotuning)")
    p.add_argument("--compile", nargs="+", default=["off"],
                   choices=["off", "default", "reduce-overhead", "max-autotune-no-cudagraphs"],
                   help="stage compile modes to time (the stages' `compile` setting)")
    p.add_argument("--cuda-graph", nargs="+", default=["off"], choices=["off", "on"],
                   help="time each stage with the whole-step CUDA graph off and/or on (the stages' `cuda_graph`)")
    p.add_argument("--stages", nargs="+", default=["attention_transfer", "lora"],
                   choices=["attention_transfer", "lora", "teacher_lora", "attention_free_lora"])
    p.add_argument("--sync-every", type=int, default=None, help="steps between loss read-backs (default: the trials')")
    p.add_argument("--check", action="store_true", help="compare the first 3 steps' losses with the eager path")
    p.add_argument("--loss-chunk-tokens", type=int, nargs="+", default=None,
                   help="time the LoRA stages once per finetune.loss_chunk_tokens value (0: whole batch)")
    p.add_argument("--recompute-features", nargs="+", default=None, choices=["off", "on"],
                   help="time the linearized model's stages with the stages' recompute_features off and/or on")
    p.add_argument("--checkpoint-layers", nargs="+", default=None, choices=["off", "on"],
                   help="time the LoRA stages with finetune.checkpoint_layers off and/or on")
    p.add_argument("--lora-compute", nargs="+", default=None, choices=["float32", "model"],
                   help="LoRA stages once per finetune.lora.compute_dtype (lora_compute column)")
    p.add_argument("--fused-features", nargs="+", default=None, choices=["off", "on"],
                   help="time the linearized model's stages with the feature maps' fused kernels off and/or on")
    p.add_argument("--profile", action="store_true",
                   help="write profile_<stage>_<compile>.txt (operator times), _trace.json.gz (timeline), _host.txt")
    p = sub.add_parser("generate")
    p.add_argument("--contexts", type=int, nargs="+", default=[8192, 32768])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--batches", type=int, nargs="+", default=None,
                   help="also time these batches at --batch-context (tokens/s vs batch)")
    p.add_argument("--batch-context", type=int, default=None, help="context of the --batches series (default: max --contexts)")
    p.add_argument("--graph", choices=["on", "off", "both"], default="both" if torch.cuda.is_available() else "off",
                   help="linearized model: whole-model CUDA-graph step (on), HF forward per step (off), or both")
    p.add_argument("--budget-s", type=float, default=None, help="record the points left after this many seconds as skipped")
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--backend", default="auto")
    p.add_argument("--max-batch-limit", type=int, default=16384, help="0 skips the largest-batch search")
    p.add_argument("--profile", action="store_true", help="write profile_<model>.txt (operator times) at the largest context")
    p = sub.add_parser("scaling")
    p.add_argument("space", type=Path)
    p.add_argument("--gpus", type=int, nargs="+", default=[1, 2])
    p.add_argument("--work", type=Path, default=Path("/tmp/lolsearch-scaling"))
    p.add_argument("--trials-per-gpu", type=int, nargs="+", default=[1],
                   help="trials sharing one GPU (the space's resources.gpu becomes 1/k); each k is timed at each --gpus")
    p = sub.add_parser("fixed", help="fixed cost per trial, cold vs warm per-process caches")
    p.add_argument("--config", type=Path, default=None, help="trial YAML (default: a short toy-llama trial)")
    p.add_argument("--trials", type=int, default=3, help="warm trials (and cold ones, unless --cold)")
    p.add_argument("--cold", type=int, default=None, help="cold trials (caches emptied first; default: --trials)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override of the trial (repeatable)")
    p.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE", help="warm trials alternate with it")
    p = sub.add_parser("eval", help="final evaluation: separate passes vs one pass")
    p.add_argument("--config", type=Path, default=None, help="trial YAML (default: the fixed command's toy trial)")
    p.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        kernel_env.check()
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    if args.model is None and args.cmd not in ("fixed", "eval"):
        args.model = "smollm2-135m"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        df = {"train": cmd_train, "generate": cmd_generate, "scaling": cmd_scaling, "fixed": cmd_fixed,
              "eval": cmd_eval}[args.cmd](args)
    except ConfigError as err:  # one line per problem, as the CLI prints them
        for problem in err.problems:
            print(str(problem), file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out / f"{args.cmd}.csv", index=False)
    command = "python -m lolsearch.perf " + shlex.join(argv if argv is not None else sys.argv[1:])
    with open(args.out / "perf.md", "a") as fh:
        fh.write(f"\n## {args.cmd}\n\n`{command}`\n\n{df.to_markdown(index=False, floatfmt='.4g')}\n")
    print(df.to_markdown(index=False, floatfmt=".4g"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
