"""``lolsearch`` command line. Each command is a thin wrapper over a library function.

Exit codes: 0 ok, 2 bad input (one line per problem: ``file: dotted.key: message``), 1 run failure.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from lolsearch.config import TrialConfig, load_yaml, parse_overrides
from lolsearch.config.io import overridden, parse_with_overrides
from lolsearch.core import kernel_env
from lolsearch.core.console import text_console
from lolsearch.core.errors import ConfigError, Problem, UsageError
from lolsearch.core.files import require_writable_dir

# Plain help (no rich markup): help texts hold brackets such as 'lolsearch[dashboard]', which markup would drop,
# and rich's option tables cut long help lines short.
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Search and ablate linearized LLMs (LoLCATs).")
out = text_console()
SPACES_DIR = Path(__file__).resolve().parent.parent / "spaces"
LISTS = ("feature-maps", "layouts", "models", "datasets", "layer-weights", "spaces")


MAX_NEW_TOKENS = 32_768
MAX_PROMPT_TOKENS = 131_072


class RunFailed(RuntimeError):
    """A run that was asked for did not succeed (exit 1)."""


def _print_version(value: bool) -> None:
    if value:
        from lolsearch.core.provenance import lolsearch_version

        print(f"lolsearch {lolsearch_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    """Search and ablate linearized LLMs (LoLCATs)."""


def _registry(kind: str):
    if kind == "feature-maps":
        from lolsearch.attention.featuremaps import FEATURE_MAPS as reg
    elif kind == "layouts":
        from lolsearch.attention.layouts import LAYOUTS as reg
    elif kind == "models":
        from lolsearch.models import MODELS as reg
    elif kind == "datasets":
        from lolsearch.data import DATASETS as reg
    else:
        from lolsearch.trial.layer_weights import LAYER_WEIGHTS as reg
    return reg


@app.command("ls")
def ls(what: Annotated[str, typer.Argument(help=f"one of: {', '.join(LISTS)}")] = "feature-maps") -> None:
    """List registered feature maps, layouts, models, datasets, layer-weight schedules or shipped spaces."""
    if what not in LISTS:
        from lolsearch.core.errors import did_you_mean

        raise ConfigError.single("ls", "what", f"unknown list '{what}'{did_you_mean(what, LISTS)} (choose from {', '.join(LISTS)})")
    table = Table(show_header=True, header_style="bold")
    table.add_column(what[:-1] if what.endswith("s") else what)
    table.add_column("description")
    if what == "spaces":
        for path in sorted(SPACES_DIR.glob("*.yaml")):
            data = load_yaml(path)
            table.add_row(str(path.relative_to(SPACES_DIR.parent)), str((data or {}).get("description", "")).strip().splitlines()[0] if isinstance(data, dict) and data.get("description") else "")
    else:
        for name, doc in _registry(what).describe().items():
            table.add_row(name, doc)
    out.print(table)


def _is_space(data: Any) -> bool:
    return isinstance(data, dict) and ("search" in data or "base" in data or "sampler" in data)


def _load_trial(path: Path, overrides: list[str]) -> tuple[TrialConfig, str | None]:
    """A TrialConfig from a trial config file or a space's ``base`` (plus ``--set`` overrides)."""
    data = load_yaml(path)
    keys = [k for k, _ in parse_overrides(overrides)]
    space_name = None
    prefix = ""
    if _is_space(data):
        from lolsearch.search.space import load_space

        space_name = load_space(path).name
        data, prefix = dict(data.get("base") or {}), "base"
    if not isinstance(data, dict):
        raise ConfigError.single(str(path), "", "expected a mapping of TrialConfig fields or a search space")
    cfg = parse_with_overrides(data, overrides, str(path), prefix)
    from lolsearch.trial.preflight import check_all

    check_all([(cfg, None)], lambda p, _: Problem("--set", p.key, p.message) if overridden(p.key, keys)
              else Problem(str(path), f"{prefix}.{p.key}" if prefix else p.key, p.message))
    return cfg, space_name


@app.command()
def validate(
    file: Path,
    samples: Annotated[int, typer.Option(min=1, max=100_000, help="points to sample and validate from a space")] = 20,
) -> None:
    """Validate a space (and N sampled trial configs) or a trial config, with the cheap checks of data files,
    model source, layer indices and device that run/sweep repeat before any compute; loads no model weights."""
    data = load_yaml(file)
    if _is_space(data):
        from lolsearch.search.space import load_space

        space = load_space(file)
        points = space.sample_points(samples, seed=0)
        from lolsearch.trial.preflight import check_all

        check_all([(p.config, p) for p in points], space.attribute)
        out.print(f"{file}: ok — space '{space.name}', {len(points)} sampled trial configs valid")
        _cost_check([p.config for p in space.plan_points() if p.config is not None], calibrate=False,
                    with_baselines=False, refuse=False, where=str(file))
    else:
        cfg, _ = _load_trial(file, [])
        out.print(f"{file}: ok — trial {cfg.trial_id}")
        _cost_check([cfg], calibrate=False, with_baselines=True, refuse=False, where=str(file))


@app.command()
def plan(
    space_file: Path,
    calibrate: Annotated[bool, typer.Option(help="time a few steps on this device for the estimates (cached)")] = True,
) -> None:
    """Show the trials a sweep would run: tokens per stage and the estimated time per trial and for the sweep."""
    from lolsearch.search.space import load_space
    from lolsearch.sweep.plan import plan_notes, plan_table

    space = load_space(space_file)
    configs = [p.config for p in space.plan_points() if p.config is not None]
    cost = _cost_check(configs, calibrate=calibrate, with_baselines=False, refuse=False, where=str(space_file))
    printer = out if out.is_terminal else text_console(width=100)  # pipes and files get 100 columns, not 80
    printer.print(plan_table(space, cost))
    for line in plan_notes(space, cost):
        printer.print(line, highlight=False)


def _cost_check(configs: list[TrialConfig], **kwargs: Any) -> Any:
    from lolsearch.sweep.plan import cost_check  # torch comes with it: not at import, so --help stays fast

    return cost_check(out, configs, **kwargs)


@app.command()
def run(
    file: Path,
    set_: Annotated[list[str] | None, typer.Option("--set", metavar="KEY=VALUE", help="dotted.key=value override (repeatable)")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="trial directory (default results/runs/<trial_id>)")] = None,
    yes: Annotated[bool, typer.Option("--yes", "--no-time-check", help="skip the estimate (run even over 1 h on CPU)")] = False,
    overwrite: Annotated[bool, typer.Option(help="replace the trial already in --out (else refused)")] = False,
) -> None:
    """Run one trial from a trial config or a space's base config."""
    from lolsearch.trial.record import claim_trial_dir
    from lolsearch.trial.run import run_trial

    cfg, space_name = _load_trial(file, set_ or [])
    target = out_dir or Path("results") / "runs" / cfg.trial_id
    claim_trial_dir(target, overwrite)
    if not yes:
        _cost_check([cfg], calibrate=True, with_baselines=True, refuse=True, where=str(file))
    out.print(f"trial {cfg.trial_id} -> {target}")
    from lolsearch.sweep.live import STAGES, RunProgress

    totals = {s: getattr(cfg, s).num_steps(cfg.data.seq_len) for s in STAGES}
    with RunProgress(cfg.trial_id, totals, console=out) as progress:
        result = run_trial(cfg, target, space=space_name, report=progress)
    m = result.metrics
    shown = {k: m[k] for k in ("ppl_teacher", "ppl_teacher_ft", "ppl_swap", "ppl_distill", "ppl", "ppl_ratio", "ppl_ratio_ft", "state_ratio_32k") if k in m}
    out.print(f"status {result.status}" + (f" ({result.error})" if result.error else ""))
    out.print(" ".join(f"{k}={v:.4g}" for k, v in shown.items()))
    if result.status != "ok":
        raise RunFailed(f"trial {cfg.trial_id} {result.status}: {result.error}")


@app.command()
def sweep(
    space_file: Path,
    out_dir: Annotated[Path | None, typer.Option("--out", help="sweep directory (default results/<space name>)")] = None,
    gpus: Annotated[int | None, typer.Option(min=0, help="GPUs Ray may use (default: all visible)")] = None,
    cpus: Annotated[int | None, typer.Option(min=1, help="CPUs Ray may use (default: all)")] = None,
    address: Annotated[str | None, typer.Option(help="join a Ray cluster: auto or HOST:PORT")] = None,
    resume: Annotated[bool, typer.Option(help="continue a killed sweep in --out")] = False,
    yes: Annotated[bool, typer.Option("--yes", "--no-time-check", help="skip the estimate (run even over 1 h on CPU)")] = False,
    max_trials: Annotated[int | None, typer.Option(min=1, help="run at most this many trials (smoke runs)")] = None,
    time_budget: Annotated[float | None, typer.Option(help="stop after this many seconds; --resume continues")] = None,
    connect_timeout: Annotated[float, typer.Option(help="seconds to wait for the --address cluster to answer")] = 30.0,
) -> None:
    """Run a search space with Ray Tune + Optuna; one result per trial under OUT/trials/."""
    from lolsearch.search.space import load_space
    from lolsearch.sweep.driver import check_sweep, run_sweep

    for flag, value in (("--time-budget", time_budget), ("--connect-timeout", connect_timeout)):
        if value is not None and not value > 0:  # also refuses nan
            raise UsageError.single(flag, "", f"must be a positive number of seconds, got {value:g}")
    space = load_space(space_file)
    target = out_dir or Path("results") / space.name
    check_sweep(space, target, resume, max_trials, address, connect_timeout)  # before any compute
    if not yes and not resume:
        _cost_check(space.plan(max_trials), calibrate=True, with_baselines=False, refuse=True, where=str(space_file))
    summary = run_sweep(space_file, target, gpus=gpus, cpus=cpus, address=address, resume=resume,
                        max_trials=max_trials, time_budget_s=time_budget, connect_timeout_s=connect_timeout)
    out.print(summary)


@app.command()
def report(sweep_dir: Path) -> None:
    """Write report.md, trials.csv, pareto.csv, report.tex and plots/ for a sweep folder."""
    from lolsearch.report import write_report

    if not sweep_dir.is_dir():
        raise ConfigError.single(str(sweep_dir), "", "not a directory")
    require_writable_dir(sweep_dir)
    path = write_report(sweep_dir)
    out.print(f"report: {path}")


@app.command()
def confirm(
    sweep_dir: Path,
    top: Annotated[int, typer.Option(min=1, help="how many of the best designs (distinct design_id)")] = 3,
    replicates: Annotated[int, typer.Option(min=1, max=100, help="seeds per design")] = 3,
    set_: Annotated[list[str] | None, typer.Option("--set", metavar="KEY=VALUE", help="dotted.key=value for every design, e.g. "
                                                   "distill.tokens=6600000 (repeatable)")] = None,
    out_path: Annotated[Path | None, typer.Option("--out", help="the space file (default "
                                                  "spaces/<name>_confirm.yaml)")] = None,
) -> None:
    """Write a space that re-runs a sweep's best designs with seeds (and new settings, e.g. larger budgets)."""
    from lolsearch.report.confirm import write_confirm_space

    if not sweep_dir.is_dir():
        raise ConfigError.single(str(sweep_dir), "", "not a directory")
    overrides = dict(parse_overrides(set_ or []))
    name = load_yaml(sweep_dir / "space.yaml").get("name") if (sweep_dir / "space.yaml").is_file() else None
    target = out_path or Path("spaces") / f"{name or sweep_dir.name}_confirm.yaml"
    path = write_confirm_space(sweep_dir, target, top, replicates, overrides)
    out.print(f"confirmation space: {path}  (lolsearch sweep {path})")


@app.command()
def compare(
    dirs: Annotated[list[Path], typer.Argument(metavar="SWEEP_DIR", help="sweep folders")],
    out_dir: Annotated[Path, typer.Option("--out", help="where compare.md/compare.csv go")] = Path("results/compare"),
) -> None:
    """One table across several sweeps, for instance of two models."""
    from lolsearch.report import compare as compare_sweeps

    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        raise ConfigError.single(missing[0], "", "not a directory")
    resolved = [d.resolve() for d in dirs]
    twice = next((d for i, d in enumerate(dirs) if resolved[i] in resolved[:i]), None)
    if twice is not None:
        raise UsageError.single(str(twice), "", "given twice: compare needs different sweep folders")
    require_writable_dir(out_dir)
    out.print(f"compare: {compare_sweeps(dirs, out_dir)}")


@app.command()
def generate(
    source: Annotated[Path, typer.Argument(help="a trial or export folder (trained) or a config/space file (untrained)")],
    prompt: Annotated[str, typer.Option(help="text to continue")] = "The capital of France is",
    max_new_tokens: Annotated[int, typer.Option(min=1, max=MAX_NEW_TOKENS, help="tokens to generate")] = 40,
    set_: Annotated[list[str] | None, typer.Option("--set", metavar="KEY=VALUE", help="dotted.key=value override for config files")] = None,
    chat: Annotated[bool, typer.Option(help="wrap the prompt in the tokenizer's chat template")] = False,
    graph: Annotated[bool, typer.Option(help="greedy decode through the static step, one CUDA graph per token on a "
                                        "GPU (every layer linearized)")] = False,
) -> None:
    """Generate text with a linearized model (constant-memory cache)."""
    from lolsearch.models import load_model, resolve_device
    from lolsearch.trial.graphed import GraphError, greedy_continuation
    from lolsearch.trial.surgery import linearize

    if not prompt.strip():
        raise UsageError.single("--prompt", "", "is empty: give the text to continue")
    if source.is_dir():
        from lolsearch.trial.export import load

        model, tok = load(source)  # a trial folder or a `lolsearch export` folder
    else:
        cfg, _ = _load_trial(source, set_ or [])
        model, tok = load_model(cfg.model, resolve_device(cfg.device))
        linearize(model, cfg.attention)
    try:
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                       add_generation_prompt=True) if chat else prompt
    except ValueError:  # transformers: no chat template on this tokenizer
        raise UsageError.single("--chat", "", "this model's tokenizer has no chat template") from None
    ids = tok(text, return_tensors="pt").input_ids.to(next(model.parameters()).device)
    if ids.shape[1] == 0:
        raise UsageError.single("--prompt", "", "gives no tokens: give the text to continue")
    if ids.shape[1] > MAX_PROMPT_TOKENS:
        raise UsageError.single("--prompt", "", f"is {ids.shape[1]} tokens long; at most {MAX_PROMPT_TOKENS}")
    try:
        new = greedy_continuation(model, ids, max_new_tokens, graph=graph, eos=tok.eos_token_id, pad=tok.pad_token_id)
    except GraphError as err:
        raise UsageError.single("--graph", "", str(err)) from None
    out.print(tok.decode(new, skip_special_tokens=True))


@app.command()
def schema(
    trial: Annotated[bool, typer.Option(help="the schema of a trial config file instead of a space file")] = False,
) -> None:
    """Print the JSON Schema of space files (editors: `lolsearch schema > spaces/schema.json`)."""
    from lolsearch.search.jsonschema import schema_text

    sys.stdout.write(schema_text(trial))


@app.command()
def dashboard(
    sweep_dir: Annotated[Path, typer.Argument(help="a sweep folder (holds optuna.journal)")],
    port: Annotated[int, typer.Option(min=1, max=65535, help="port of the web UI")] = 8080,
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
) -> None:
    """Open a sweep's Optuna study in optuna-dashboard (pip install 'lolsearch[dashboard]')."""
    journal = sweep_dir / "optuna.journal"
    if not journal.is_file():
        raise ConfigError.single(str(sweep_dir), "", "no optuna.journal here: not a sweep folder")
    try:
        import optuna_dashboard
    except ImportError:
        raise ConfigError.single("dashboard", "", "optuna-dashboard is not installed: "
                                 "pip install 'lolsearch[dashboard]'") from None
    from lolsearch.sweep.study import study_storage

    out.print(f"optuna-dashboard for {journal} on http://{host}:{port} (Ctrl-C stops it)")
    optuna_dashboard.run_server(study_storage(journal), host=host, port=port)


@app.command()
def export(
    trial_dir: Annotated[Path, typer.Argument(help="a finished trial folder (config.yaml + adapter.safetensors)")],
    out_dir: Annotated[Path, typer.Option("--out", help="the new export folder")],
    merge_lora: Annotated[bool, typer.Option(help="fold LoRA into the weights instead of peft adapter files")] = False,
    dtype: Annotated[str | None, typer.Option(help="cast the whole model: float32, bfloat16 or float16")] = None,
) -> None:
    """Write a trained design as a folder `lolsearch.load` reads (plain transformers refuses it)."""
    from lolsearch.trial.export import export_trial
    from lolsearch.trial.record import ADAPTER_FILE, CONFIG_FILE

    for name in (CONFIG_FILE, ADAPTER_FILE):
        if not (trial_dir / name).is_file():
            raise ConfigError.single(str(trial_dir), "", f"no {name}: not a finished trial folder")
    if out_dir.exists():
        raise ConfigError.single(str(out_dir), "", "already exists; export into a new folder")
    if dtype is not None and dtype not in ("float32", "bfloat16", "float16"):
        raise ConfigError.single("--dtype", "", f"'{dtype}' is not one of float32, bfloat16, float16")
    out.print(f"export: {export_trial(trial_dir, out_dir, merge_lora=merge_lora, dtype=dtype)}")


@app.command()
def bench(
    out_dir: Annotated[Path, typer.Option("--out", help="where bench.csv/bench.md go")] = Path("results/kernels"),
    quick: Annotated[bool, typer.Option(help="small shapes only")] = False,
) -> None:
    """Benchmark the attention kernels against SDPA / fla / the PyTorch paths (needs a GPU for real numbers)."""
    from lolsearch.kernels.bench import main as bench_main

    require_writable_dir(out_dir)
    bench_main(["--out", str(out_dir), *(["--quick"] if quick else [])])


def main(argv: list[str] | None = None) -> int:
    """Entry point: maps bad input to exit 2 and failed runs to exit 1."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "ray", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        kernel_env.check()  # a bad LOLSEARCH_KERNELS_* value stops every command before any work
        rc = app(args=argv, standalone_mode=False, prog_name="lolsearch")
    except ConfigError as err:  # UsageError too
        for p in err.problems:
            print(str(p), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except RunFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except Exception as err:
        code = _click_exit(err)
        if code is not None:
            return code
        if os.environ.get("LOLSEARCH_DEBUG"):
            raise
        line = f"{type(err).__name__}: {err}".splitlines()[0][:300]
        print(f"error: {line} (an internal error; LOLSEARCH_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1
    return rc if isinstance(rc, int) else 0


def _click_exit(err: Exception) -> int | None:
    """Exit code of a click exception (typer raises its own vendored copies, so match by class name), printing
    one line for a usage error; None for anything else."""
    names = {c.__name__ for c in type(err).__mro__}
    ctx = getattr(err, "ctx", None)
    if "NoArgsIsHelpError" in names and ctx is not None:
        print(ctx.get_help())
        return 0
    if "UsageError" in names:
        command = ctx.command_path if ctx is not None else "lolsearch"
        print(f"{command}: {' '.join(err.format_message().split())} (see {command} --help)", file=sys.stderr)
        return 2
    if "Abort" in names:
        return 130
    if "Exit" in names:
        return getattr(err, "exit_code", 0)
    if "ClickException" in names:
        print(f"lolsearch: {err.format_message()}", file=sys.stderr)
        return getattr(err, "exit_code", 1)
    return None


if __name__ == "__main__":
    sys.exit(main())
