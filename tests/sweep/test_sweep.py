"""Sweeps through a real local Ray (2 CPUs): the toy space end to end, failures and pruning, kill + resume.

Ray starts once for the in-process tests (session fixture); the kill/resume test runs the CLI in its own
process group with its own Ray (own RAY_TMPDIR, so its leftovers can be found and ended by pid).
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import torch

from lolsearch.core.errors import ConfigError
from lolsearch.search.space import load_space
from lolsearch.sweep.driver import run_sweep
from lolsearch.sweep.study import study_storage

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
TOY = ROOT / "spaces" / "toy.yaml"


@pytest.fixture(scope="session")
def ray_session():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    if ray.is_initialized():  # another module's session Ray: share it
        yield
        return
    ray.init(num_cpus=2, include_dashboard=False, logging_level="error", log_to_driver=False)
    yield
    ray.shutdown()


def records(out: Path) -> dict[str, dict]:
    found = [json.loads(p.read_text()) for p in (out / "trials").glob("*/result.json")]
    return {r["trial_id"]: r for r in found}


def study_trials(out: Path, name: str) -> list:
    study = optuna.load_study(study_name=name, storage=study_storage(out / "optuna.journal"))
    return study.get_trials(deepcopy=False)


def _ray_pids(tmpdir: str) -> list[int]:
    """Processes of the Ray run whose RAY_TMPDIR is ``tmpdir`` (only those this test started)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                env = (entry / "environ").read_bytes()
            except OSError:
                continue
            if f"RAY_TMPDIR={tmpdir}".encode() in env.split(b"\0"):
                pids.append(int(entry.name))
    return pids


def _end(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _sweep_cli(out: Path, tmpdir: str, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, RAY_TMPDIR=tmpdir, RAY_AUTH_MODE="disabled")
    cmd = [sys.executable, "-m", "lolsearch", "sweep", str(TOY), "--out", str(out), *extra]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_killed_sweep_resumes_without_losing_or_rerunning(tmp_path):
    planned = {c.trial_id for c in load_space(TOY).plan()}
    out = tmp_path / "sweep"
    tmpdir = tempfile.mkdtemp(prefix="lsr", dir="/tmp")  # short: Ray puts unix sockets below it
    try:
        proc = _sweep_cli(out, tmpdir)
        deadline = time.time() + 240
        while not any(r.get("status") == "ok" for r in records(out).values()):
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() < deadline, "no trial finished"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        _end(_ray_pids(tmpdir))
        first = records(out)
        assert 1 <= len(first) < len(planned)

        proc = _sweep_cli(out, tmpdir, "--resume")
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, output
    finally:
        _end(_ray_pids(tmpdir))
        shutil.rmtree(tmpdir, ignore_errors=True)
    final = records(out)
    assert set(final) == planned and all(r["status"] == "ok" for r in final.values())
    for trial_id, record in first.items():  # finished before the kill: kept, not recomputed
        assert final[trial_id]["env"]["started_at"] == record["env"]["started_at"]
    attrs = [t.user_attrs["trial_id"] for t in study_trials(out, "toy")]
    assert sorted(attrs) == sorted(planned)  # one Optuna entry per trial, none twice
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["num_trials_planned"] == len(planned) and sweep["finished_at"] and sweep["resumed_at"]


def test_toy_sweep_end_to_end(ray_session, tmp_path):
    space = load_space(TOY)
    planned = {c.trial_id for c in space.plan()}
    out = tmp_path / "toy"
    summary = run_sweep(TOY, out)
    found = records(out)
    assert set(found) == planned and len(planned) >= 4
    assert summary.planned == len(planned) and summary.counts == {"ok": len(planned)}
    for trial_id, r in found.items():
        assert r["space"] == "toy" and r["config"]["model"]["source"] == "toy-llama"
        assert r["metrics"]["ppl_ratio_ft"] > 0 and r["metrics"]["state_bytes_32k"] > 0
        assert (out / "trials" / trial_id / "config.yaml").exists()
    assert (out / "space.yaml").read_text() == TOY.read_text()
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["space"] == "toy" and sweep["num_trials_planned"] == len(planned) and sweep["finished_at"]
    trials = study_trials(out, "toy")
    assert sorted(t.user_attrs["trial_id"] for t in trials) == sorted(planned)
    assert all(t.state == optuna.trial.TrialState.COMPLETE and len(t.values) == 2 for t in trials)
    assert set(trials[0].params) == set(space.searched_keys)
    with pytest.raises(ConfigError, match="already holds a sweep"):
        run_sweep(TOY, out)
    again = run_sweep(TOY, out, resume=True)  # nothing left: every record kept as it was
    assert {r["trial_id"]: r["env"]["started_at"] for r in again.records} == {
        k: r["env"]["started_at"] for k, r in found.items()}
    # the report of the toy sweep: every table and plot, from the records alone
    from lolsearch.report import write_report

    md = write_report(out).read_text()
    assert f"{len(planned)} ok" in md and "## Ablations" in md
    for name in ("trials.csv", "pareto.csv", "report.tex", "plots/pareto.png", "plots/curves.png"):
        assert (out / name).stat().st_size > 0, name


FAILING = """
name: toy_fail
base:
  device: cpu
  model: {source: toy-llama}
  data: {source: shakespeare, seq_len: 64}
  attention: {window: 8}
  distill: {steps: 2, batch_size: 2, eval_every: 2, eval_batches: 1}
  finetune: {steps: 2, batch_size: 2, eval_every: 2, eval_batches: 1}
  eval: {tokens: 256, batch_size: 4}
  efficiency: {measure: false}
search:
  finetune.lr: {choice: [1.0e-4, 1.0e+30]}  # LoRA at lr 1e30 makes the logits NaN
  attention.window: {choice: [4, 8]}
constraints: ["attention.window == 8 or finetune.lr > 1"]
objectives: [{metric: ppl_ratio_ft, mode: min}]
sampler: {kind: random, num_trials: 6, seed: 2}
"""


def test_failing_and_pruned_trials_do_not_stop_the_sweep(ray_session, tmp_path):
    path = tmp_path / "fail.yaml"
    path.write_text(FAILING)
    plan = load_space(path).plan_points()
    kinds = {("pruned" if p.pruned else "failed" if p.params["finetune.lr"] > 1 else "ok") for p in plan}
    assert kinds == {"ok", "failed", "pruned"}  # the seed reaches every outcome
    out = tmp_path / "out"
    run_sweep(path, out)
    found = records(out)
    assert set(found) == {p.ref().identity("toy_fail")[0] for p in plan}  # `plan` shows what runs
    for r in found.values():
        lr, window = r["config"]["finetune"]["lr"], r["config"]["attention"]["window"]
        if window == 4 and lr < 1:
            assert r["status"] == "pruned" and "violates constraint" in r["error"]
        elif lr > 1:
            assert r["status"] == "failed" and r["error"] and "ppl_ratio_ft" not in r["metrics"]
        else:
            assert r["status"] == "ok" and r["error"] is None and r["metrics"]["ppl_ratio_ft"] > 0
    assert {r["status"] for r in found.values()} == kinds
    states = {t.user_attrs.get("status"): t.state.name for t in study_trials(out, "toy_fail")}
    assert states == {"ok": "COMPLETE", "failed": "FAIL", "pruned": "PRUNED"}


NSGA2 = FAILING.replace("name: toy_fail", "name: toy_nsga2").replace(
    "finetune.lr: {choice: [1.0e-4, 1.0e+30]}  # LoRA at lr 1e30 makes the logits NaN",
    "finetune.lr: {loguniform: [1.0e-5, 1.0e-3]}").replace(
    'constraints: ["attention.window == 8 or finetune.lr > 1"]\n', "").replace(
    "objectives: [{metric: ppl_ratio_ft, mode: min}]",
    "objectives: [{metric: ppl_ratio_ft, mode: min}, {metric: state_bytes_32k, mode: min}]").replace(
    "sampler: {kind: random, num_trials: 6, seed: 2}", "sampler: {kind: nsga2, num_trials: 3, population_size: 2}")


def test_an_nsga2_sweep_runs_through_ray(ray_session, tmp_path):
    """Ray pickles the searcher with its sampler; Optuna's NSGA-II sampler holds a thread lock that does not pickle.
    With a time budget the sampler runs inside LateStart, and Optuna still hears every outcome."""
    path = tmp_path / "nsga2.yaml"
    path.write_text(NSGA2)
    assert load_space(path).spec.sampler.kind == "nsga2"
    summary = run_sweep(path, tmp_path / "out", time_budget_s=600)
    assert summary.counts == {"ok": 3}
    assert [t.state.name for t in study_trials(tmp_path / "out", "toy_nsga2")] == ["COMPLETE"] * 3


def test_resources_the_cluster_lacks_are_refused_before_any_trial(ray_session, tmp_path):
    path = tmp_path / "gpu.yaml"
    path.write_text(TOY.read_text().replace("resources: {cpu: 1}", "resources: {cpu: 1, gpu: 0.5}"))
    with pytest.raises(ConfigError, match="resources.gpu: each trial asks for 0.5 GPU but the Ray cluster has 0"):
        run_sweep(path, tmp_path / "out")
    assert not (tmp_path / "out" / "trials").exists()
    with pytest.raises(ConfigError, match="--gpus/--cpus size a local Ray"):
        run_sweep(TOY, tmp_path / "out2", address="auto", gpus=1)


@pytest.mark.gpu
def test_trials_share_a_gpu(tmp_path):
    """Two trials per GPU (gpu 0.5), each capped to half the memory; run on a CUDA machine."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    path = tmp_path / "gpu.yaml"
    path.write_text(TOY.read_text().replace("device: cpu", "device: cuda")
                    .replace("resources: {cpu: 1}", "resources: {cpu: 1, gpu: 0.5}"))
    summary = run_sweep(path, tmp_path / "out", gpus=1)
    assert summary.counts == {"ok": 4}
    assert all(r["env"]["device"] != "cpu" for r in summary.records)


def test_trials_cut_by_the_time_budget_rerun_on_resume(ray_session, tmp_path):
    """A run stopped by --time-budget leaves no final record for the trials it cut; --resume runs them."""
    space = load_space(TOY)
    planned = {c.trial_id for c in space.plan()}
    out = tmp_path / "budget"
    first = run_sweep(TOY, out, time_budget_s=0.5)
    cut = planned - set(records(out))
    assert cut, "a half-second budget should stop some toy trials"
    assert all(r["status"] == "ok" for r in records(out).values())  # nothing cut was recorded as final
    again = run_sweep(TOY, out, resume=True)
    assert set(records(out)) == planned and again.counts == {"ok": len(planned)}
    assert first.planned == again.planned == len(planned)


def test_baseline_tasks_still_running_at_the_time_budget_are_cancelled(ray_session, caplog):
    """A sweep stopped by its budget returns instead of blocking on teacher-baseline tasks (seen on the H200)."""
    import ray

    from lolsearch.sweep.driver import _wait_baselines

    slow = ray.remote(num_cpus=0)(lambda: time.sleep(120)).remote()
    fast = ray.remote(num_cpus=0)(lambda: "RuntimeError: no data").remote()
    ray.get(fast)
    t0 = time.time()
    _wait_baselines([slow, fast], deadline=time.time() + 1.0)
    assert time.time() - t0 < 30
    assert "1 teacher baseline task(s) cancelled" in caplog.text and "no data" in caplog.text
    with pytest.raises((ray.exceptions.TaskCancelledError, ray.exceptions.WorkerCrashedError)):
        ray.get(slow, timeout=30)


def test_a_resumed_sweep_starts_no_trial_that_its_time_budget_would_cut(ray_session, tmp_path):
    """The finished trial took an hour (its record says): with 10 minutes of budget, --resume starts nothing."""
    out = tmp_path / "late"
    run_sweep(TOY, out, max_trials=1)
    (only,) = records(out)
    path = out / "trials" / only / "result.json"
    record = json.loads(path.read_text())
    record["timing"]["total_s"] = 3600.0
    path.write_text(json.dumps(record))
    t0 = time.time()
    run_sweep(TOY, out, resume=True, time_budget_s=600)
    assert set(records(out)) == {only} and time.time() - t0 < 300  # the rest runs on a later --resume (test above)


def test_cached_baselines_get_no_task(tmp_path, monkeypatch):
    """The toy grid's one teacher baseline gets a Ray task while it is missing and none once cached (for the
    trials' device: "auto" with a GPU share resolves to CUDA, whose cache entry is a different one)."""
    import types

    from lolsearch.search.space import load_space
    from lolsearch.sweep import driver
    from lolsearch.trial.baselines import baselines_cached, distinct_baselines, ensure_baselines

    monkeypatch.setenv("LOLSEARCH_CACHE", str(tmp_path))
    launched: list[tuple] = []
    task = types.SimpleNamespace(remote=lambda *args: launched.append(args))
    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(remote=lambda **_kw: lambda _fn: task))
    space = load_space(TOY)
    driver._launch_baselines(space, None)
    assert len(launched) == 1
    (cfg,) = distinct_baselines(space.plan(), torch.device("cpu"))
    assert not baselines_cached(cfg, 0.0)
    ensure_baselines(cfg)
    assert baselines_cached(cfg, 0.0) and not baselines_cached(cfg.model_copy(update={"device": "auto"}), 0.5)
    launched.clear()
    driver._launch_baselines(space, None)
    assert launched == []
