"""``lolsearch sweep``: run a search space with Ray Tune (+ Optuna) on every CPU/GPU Ray can see.

One Ray trial = one point of the space = one ``run_trial`` call in a Ray worker process (reused from trial
to trial, memory released in between; only plain config dicts travel through Ray). Grid spaces feed
their exact, de-duplicated points to Tune (``tune.grid_search``) and record each finished trial into the
Optuna study; other samplers use ``OptunaSearch`` with :func:`lolsearch.search.space.define_by_run`. Sweep
folder layout (contracts)::

    DIR/space.yaml  DIR/sweep.json  DIR/optuna.journal  DIR/trials/<trial_id>/result.json  DIR/tb/<trial_id>/  DIR/ray/

Resume: a fresh Tuner over what is left (Ray's previous experiment folder is moved aside to
``DIR/ray.unrestorable.<time>``); a trial whose ``DIR/trials/<trial_id>/result.json`` already holds a final
status is never recomputed. Progress rows and fallback records: :mod:`lolsearch.sweep.progress`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from lolsearch.config import TrialConfig
from lolsearch.config.io import parse_yaml
from lolsearch.config.trial import canonical
from lolsearch.core.errors import ConfigError
from lolsearch.core.files import atomic_write_text, require_writable_dir
from lolsearch.core.provenance import git_sha, lolsearch_version
from lolsearch.search.space import SearchSpace, define_by_run, label_of, load_space, make_sampler
from lolsearch.sweep.connect import probe_address
from lolsearch.sweep.integrations import cluster_nodes
from lolsearch.sweep.progress import STUDY_FILE, SweepCallback, grid_recorder
from lolsearch.sweep.study import TrialSearcher, study_storage
from lolsearch.sweep.trainable import SweepContext, sweep_trainable, trial_dirname
from lolsearch.trial.preflight import check_all
from lolsearch.trial.record import read_results

log = logging.getLogger(__name__)
BASELINE_GRACE_S = 30.0  # after the time budget, how long a sweep still waits for its baseline tasks
SWEEP_FILES = ("space.yaml", "sweep.json", STUDY_FILE, "trials", "ray")  # what a fresh sweep would overwrite
PREFLIGHT_SUGGESTIONS = 200  # sampler suggestions the pre-run checks look at (a grid: every point)


@dataclass
class SweepSummary:
    """What a sweep left in ``out_dir``: one record per trial id."""

    space: str
    out_dir: Path
    planned: int
    records: list[dict] = field(default_factory=list)
    wall_s: float = 0.0
    resumed: bool = False

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(r.get("status", "?") for r in self.records))

    def __str__(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items())) or "no trials"
        return (f"sweep '{self.space}': {len(self.records)}/{self.planned} trials recorded ({counts}) in "
                f"{self.wall_s:.0f} s -> {self.out_dir}")

    def __rich__(self) -> str:
        return str(self)


def run_sweep(
    space_path: str | Path,
    out_dir: str | Path,
    *,
    gpus: int | None = None,
    cpus: int | None = None,
    address: str | None = None,
    resume: bool = False,
    max_trials: int | None = None,
    time_budget_s: float | None = None,
    connect_timeout_s: float = 30.0,
) -> SweepSummary:
    """Runs (or with ``resume`` continues) a sweep of ``space_path`` into ``out_dir``.

    Raises :class:`ConfigError` for a bad space, a folder that already holds another sweep (or is a file, or
    unwritable), trials whose data/model/device fail the pre-run checks (:mod:`lolsearch.trial.preflight`), all
    before Ray starts; for an ``address`` that does not answer within ``connect_timeout_s``; or for per-trial
    resources the Ray cluster cannot give. A failing trial never stops the sweep.
    """
    start = time.time()
    space = load_space(space_path)
    if time_budget_s is not None:  # a wall-clock cap for this run only (trials it stops rerun on --resume)
        space.budget = space.budget.model_copy(update={"time_s": time_budget_s})
    out = Path(out_dir).expanduser().resolve()
    if address is not None and (gpus is not None or cpus is not None):
        raise ConfigError.single("--address", "", "--gpus/--cpus size a local Ray; a cluster brings its own resources")
    check_sweep(space, out, resume, max_trials, address, connect_timeout_s)
    planned = space.num_trials(max_trials)
    points = space.grid()[0][:planned] if space.is_grid else []

    import optuna
    import ray

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = _ray_init(gpus, cpus, address, connect_timeout_s)
    try:
        cluster = ray.cluster_resources()
        _check_resources(space, cluster)
        _init_folder(space, out)
        command = _command(space_path, out, gpus, cpus, address, resume, max_trials)
        sweep_json = _sweep_json(space, out, planned, resume, command)
        sweep_json["devices"] = _devices(cluster)
        sweep_json["cluster"] = {k: v for k, v in cluster.items() if k in ("CPU", "GPU")}
        sweep_json["nodes"] = cluster_nodes()  # every node's resources, not only the driver's devices
        _write_sweep_json(out, sweep_json)
        tuner = _tuner(space, out, points, planned, resume)
        if tuner is not None:
            baselines = _launch_baselines(space, max_trials)
            deadline = None if space.budget.time_s is None else time.time() + space.budget.time_s + BASELINE_GRACE_S
            with _tune_env():
                tuner.fit()
            _wait_baselines(baselines, deadline)
    finally:
        if started:
            ray.shutdown()
    if space.is_grid:  # a kill between a trial's record and its Optuna entry: add what is missing
        recorder = grid_recorder(space, out)
        params = {p.config.trial_id: p.params for p in points}
        for r in read_results(out):
            if r["trial_id"] in params:
                recorder.record(r, {k: label_of(v) for k, v in params[r["trial_id"]].items()})
    sweep_json["finished_at"] = _now()
    _write_sweep_json(out, sweep_json)
    records = read_results(out)
    return SweepSummary(space.name, out, planned, records, time.time() - start, resume)


def _launch_baselines(space: SearchSpace, max_trials: int | None) -> list:
    """Starts one Ray task per teacher baseline the planned trials are sure to need, beside the trials.

    Trials read the cached values at their end (waiting on the file lock when a task is still on it),
    so the teacher's LoRA stage overlaps the students' training instead of running in every trial. A grid's
    plan is exact: every distinct baseline is launched. A sampled space launches only a baseline that no
    searched key changes; otherwise each trial computes its own, in its own resources (launching the guessed
    plan's baselines would queue dozens of tasks the real trials never read, ahead of those trials). A cached
    baseline gets no task: with one trial per GPU that task holds the GPU while its worker starts, only to read it.
    """
    import ray
    import torch

    from lolsearch.trial.baselines import baselines_cached, distinct_baselines

    res = space.resources
    configs = [cfg for cfg in distinct_baselines(space.plan(max_trials), torch.device("cpu"),
                                                 shared_by_all=not space.is_grid)
               if not baselines_cached(cfg, res.gpu)]
    task = ray.remote(num_cpus=res.cpu, num_gpus=res.gpu, max_retries=0)(baseline_task)
    return [task.remote(cfg.model_dump(mode="json"), res.cpu, res.gpu) for cfg in configs]


def _wait_baselines(refs: list, deadline: float | None = None) -> None:
    """Collects the baseline tasks' problems; past ``deadline`` (the time budget's end, epoch seconds) the
    tasks still running are cancelled, so a sweep stopped by its budget ends instead of waiting on them."""
    import ray

    if not refs:
        return
    timeout = None if deadline is None else max(0.0, deadline - time.time())
    done, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout)
    for ref in pending:
        ray.cancel(ref, force=True)
    if pending:
        log.warning("%d teacher baseline task(s) cancelled at the time budget; the trials that need them compute "
                    "them", len(pending))
    for problem in ray.get(done):
        if problem:
            log.warning("teacher baseline task failed (trials compute it themselves): %s", problem)


def baseline_task(config: dict, cpu: float, gpu: float) -> str | None:
    """Ray task body: fill the baseline cache for one config; returns an error line or None."""
    from lolsearch.sweep.trainable import limit_process
    from lolsearch.trial.baselines import ensure_baselines

    limit_process(cpu, gpu)
    try:
        ensure_baselines(TrialConfig.model_validate(config))
    except Exception as err:  # a trial recomputes (and records) the problem itself
        return f"{type(err).__name__}: {err}".splitlines()[0]
    return None


def check_sweep(space: SearchSpace, out: Path, resume: bool, max_trials: int | None, address: str | None = None,
                connect_timeout_s: float = 30.0) -> None:
    """What is checked before any compute: the folder (see :func:`_check_folder`), the cheap pre-run checks of
    every planned trial (:mod:`lolsearch.trial.preflight`) and that ``address`` answers. Raises
    :class:`ConfigError`."""
    _check_folder(space, Path(out).expanduser().resolve(), resume)
    if address is not None:
        probe_address(address, connect_timeout_s)
    # a grid's points are known; a sampler's later suggestions are not: check its first ones (seeded, cheap)
    first = max_trials if space.is_grid else min(max_trials or PREFLIGHT_SUGGESTIONS, PREFLIGHT_SUGGESTIONS)
    check_all([(p.config, p) for p in space.plan_points(first) if p.config is not None], space.attribute)


# Keys of a space file that say how trials run, not which: a sweep resumes with other values of them (more GPUs,
# a larger memory share per trial, the speed-only stage and eval settings in base), since they change no trial's result.
RUN_KEYS = ("resources", "budget")


def _design_part(text: str) -> Any:
    """The space file without its RUN_KEYS, its base in :func:`~lolsearch.config.trial.canonical` form (speed-only
    stage and eval settings left out; the text itself where it does not parse to a mapping)."""
    try:
        data = parse_yaml(text)
    except (yaml.YAMLError, ValueError):
        return text
    if not isinstance(data, dict):
        return text
    design = {k: v for k, v in data.items() if k not in RUN_KEYS}
    base = design.get("base")
    if isinstance(base, dict):
        design["base"] = canonical(base)
    return design


def _check_folder(space: SearchSpace, out: Path, resume: bool) -> None:
    """A new sweep needs a fresh, writable folder; a resumed one the same space file as before."""
    require_writable_dir(out)
    copy = out / "space.yaml"
    if resume:
        if not copy.exists():
            raise ConfigError.single(str(out), "", "nothing to resume here (no space.yaml); drop --resume to start")
        if _design_part(copy.read_bytes().decode("utf-8", errors="replace")) != _design_part(space.text):
            raise ConfigError.single(space.file, "", f"differs from {copy}, the space this sweep started with, "
                                     f"in more than {' and '.join(RUN_KEYS)} (and speed-only stage settings); "
                                     "resume with that file or start a new --out")
        _check_state(out)
    elif any((out / name).exists() for name in SWEEP_FILES):
        held = ", ".join(name for name in SWEEP_FILES if (out / name).exists())
        raise ConfigError.single(str(out), "", f"already holds a sweep ({held}); pass --resume to continue it or pick "
                                 "another --out")


def _check_state(out: Path) -> None:
    """A resumed sweep's own files must read back: sweep.json (a JSON object) and the Optuna journal."""
    path = out / "sweep.json"
    try:
        if path.exists() and not isinstance(json.loads(path.read_text(encoding="utf-8")), dict):
            raise ValueError("not a JSON object")
        path = out / STUDY_FILE
        if path.exists():
            study_storage(path)
    except Exception as err:  # JSON, UTF-8 and Optuna's own replay errors alike
        raise ConfigError.single(str(path), "", f"cannot be read ({type(err).__name__}: {str(err)[:120]}); move it "
                                 "aside to resume (finished trials stay in trials/ and are not rerun)") from None


def _init_folder(space: SearchSpace, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "space.yaml").exists():
        tmp = out / ".space.yaml.tmp"
        tmp.write_text(space.text)
        os.replace(tmp, out / "space.yaml")


def _command(space_path: str | Path, out: Path, gpus: int | None, cpus: int | None, address: str | None,
             resume: bool, max_trials: int | None) -> str:
    """The ``lolsearch sweep`` command line that does what this call does."""
    parts = ["lolsearch", "sweep", str(space_path), "--out", str(out)]
    for flag, value in (("--gpus", gpus), ("--cpus", cpus), ("--address", address), ("--max-trials", max_trials)):
        if value is not None:
            parts += [flag, str(value)]
    return " ".join(parts + (["--resume"] if resume else []))


def _sweep_json(space: SearchSpace, out: Path, planned: int, resume: bool, command: str) -> dict[str, Any]:

    previous = {}
    if resume and (out / "sweep.json").exists():
        previous = json.loads((out / "sweep.json").read_text())
    import optuna
    import ray
    import torch

    s = space.sampler
    data = {
        "space": space.name,
        "space_file": str(Path(space.file).resolve()),
        "command": previous.get("command", command),
        "started_at": previous.get("started_at", _now()),
        "finished_at": None,
        "git_sha": git_sha(),
        "versions": {"lolsearch": lolsearch_version(), "ray": ray.__version__, "optuna": optuna.__version__,
                     "torch": torch.__version__, "python": sys.version.split()[0]},
        "devices": previous.get("devices", []),
        "num_trials_planned": planned,
        "sampler": s.model_dump(mode="json", exclude_none=True),
        "objectives": [o.model_dump(mode="json") for o in space.objectives],
        "resources": space.resources.model_dump(mode="json"),
        "searched_keys": space.searched_keys,
    }
    if resume:
        data["resumed_at"] = [*previous.get("resumed_at", []), _now()]
    return data


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _ray_init(gpus: int | None, cpus: int | None, address: str | None, connect_timeout_s: float = 30.0) -> bool:
    """Starts (or joins) Ray unless this process already has it; True when we started it."""
    import ray

    if ray.is_initialized():
        return False
    if address is None:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local runs: no token file
    quiet = {"include_dashboard": False, "logging_level": "error", "log_to_driver": False}
    if address is not None:
        probe_address(address, connect_timeout_s)
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise ConfigError.single("--address", "", f"cannot join the Ray cluster at {address}: "
                                     f"{str(err).splitlines()[0][:200]}") from None
    else:
        ray.init(num_cpus=cpus, num_gpus=gpus, **quiet)
    return True


def _check_resources(space: SearchSpace, cluster: dict[str, float]) -> None:
    r = space.resources
    for what, need in (("gpu", r.gpu), ("cpu", r.cpu)):
        have = cluster.get(what.upper(), 0.0)
        if need > have:
            raise ConfigError.single(space.file, f"resources.{what}", f"each trial asks for {need:g} {what.upper()} but "
                                     f"the Ray cluster has {have:g} (see --{what}s / --address)")


def _devices(cluster: dict[str, float]) -> list[str]:
    names = []
    with contextlib.suppress(Exception):
        import torch

        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return names or [f"cpu x{cluster.get('CPU', 0):g}"]


@contextlib.contextmanager
def _tune_env():
    """Environment of ``Tuner.fit`` in the driver, restored afterwards."""
    settings = {
        # intermediate reports (loss, eval_loss) do not carry the objectives; only the final one does
        "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
        # Ray's own experiment banner and tables off: SweepCallback prints the progress rows
        "RAY_AIR_NEW_OUTPUT": "0",
    }
    old = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _tuner(space: SearchSpace, out: Path, points: list, planned: int, resume: bool) -> Any:
    """A Tuner over what is left to run, or None when a resumed sweep has nothing left.

    A resume never restores Ray's experiment: trials keep no mid-trial checkpoints, so restoring would
    only bring back Tune's view of which trials ended, and Tune counts trials its time budget stopped
    as ended. The records in ``DIR/trials`` and the Optuna journal are the state that matters.
    """
    from ray import tune

    from lolsearch.sweep.late_start import LateStart, PointSearcher

    trainable = tune.with_resources(sweep_trainable, {"cpu": space.resources.cpu, "gpu": space.resources.gpu})
    exp = out / "ray"
    records = read_results(out)
    done = {r["trial_id"] for r in records}
    if exp.exists():  # the previous run's Tune state: keep it aside, run what is left
        shutil.move(str(exp), str(out / f"ray.unrestorable.{int(time.time())}"))
    ctx = SweepContext(str(out), space.name, space.resources.cpu, space.resources.gpu).to_ray()
    searcher: Any
    if space.is_grid:
        todo = [p.to_ray(i) for i, p in enumerate(points) if p.config.trial_id not in done]
        if not todo:
            return None
        searcher, num_samples = PointSearcher(todo), len(todo)
    else:
        num_samples = planned - len(done) if resume else planned
        if num_samples <= 0:
            return None
        # on a fresh resume, a sampler with the old seed would replay the same first points
        seed = space.sampler.seed + (len(done) if resume else 0)
        objectives, modes = [o.metric for o in space.objectives], [o.mode for o in space.objectives]
        searcher = TrialSearcher(
            space=functools.partial(define_by_run, space=space),
            metric=objectives if len(objectives) > 1 else objectives[0],
            mode=modes if len(modes) > 1 else modes[0],
            sampler=make_sampler(space, seed),
            study_name=space.name,
            storage=study_storage(out / STUDY_FILE),
        )
    if space.budget.time_s is not None:  # start no trial that the budget would cut off
        walls = [(r.get("timing") or {}).get("total_s") for r in records if r.get("status") == "ok"]
        searcher = LateStart(searcher, time.time() + space.budget.time_s, [w for w in walls if w])
    param_space = {"_sweep": ctx}
    tune_config = tune.TuneConfig(
        search_alg=searcher, scheduler=_scheduler(space), num_samples=num_samples,
        max_concurrent_trials=space.budget.max_concurrent, time_budget_s=space.budget.time_s,
        trial_dirname_creator=trial_dirname,
        reuse_actors=True,  # one worker process runs trial after trial: no torch import per trial
    )
    run_config = tune.RunConfig(
        name="ray", storage_path=str(out), verbose=0, callbacks=[SweepCallback(space, out, planned)],
        failure_config=tune.FailureConfig(max_failures=space.budget.retries),
    )
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)


def _scheduler(space: SearchSpace) -> Any:
    if space.scheduler is None:
        return None
    from ray.tune.schedulers import ASHAScheduler

    s = space.scheduler
    return ASHAScheduler(time_attr=s.time_attr, metric=s.metric, mode=s.mode, max_t=s.max_t,
                         grace_period=s.grace_period, reduction_factor=s.reduction_factor)


def _write_sweep_json(out: Path, data: dict[str, Any]) -> None:
    atomic_write_text(out / "sweep.json", json.dumps(data, indent=1, default=str))
