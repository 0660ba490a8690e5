"""A sweep on a real multi-node Ray cluster (``ray.cluster_utils.Cluster``: a head and two worker nodes on this
machine, one CPU each), driven by ``lolsearch sweep --address``: trials run on several nodes at once and land in
the one output folder; a worker node killed mid-sweep loses no trial (Tune retries it on a live node, the sweep's
``FailureConfig``); a driver killed mid-sweep is finished by ``--resume`` against the same cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from lolsearch.search.space import load_space

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
CORPUS = "".join(f"Line {i}: the quick brown fox jumps over the lazy dog, again and again.\n" for i in range(600))
SPACE = """\
name: cluster
base:
  device: cpu
  model: {{source: toy-llama}}
  data: {{source: text, path: {corpus}, seq_len: 32}}
  attention: {{window: 8}}
  distill: {{tokens: null, steps: 3, batch_size: 2, eval_every: 3, eval_batches: 1}}
  finetune: {{tokens: null, steps: 3, batch_size: 2, eval_every: 3, eval_batches: 1}}
  eval: {{tokens: 256, batch_size: 4, teacher_ft: false}}
  efficiency: {{measure: false}}
search:
  attention.feature_map.kind: {{choice: [hedgehog, t2r, elu]}}
  attention.layout: {{choice: [sliding, terrace]}}
objectives: [{{metric: ppl_ratio, mode: min}}]
sampler: {{kind: grid}}
resources: {{cpu: 1}}
budget: {{retries: 2}}
"""


def records(out: Path) -> dict[str, dict]:
    found = {}
    for p in (out / "trials").glob("*/result.json"):
        with contextlib.suppress(ValueError, OSError):  # a record being renamed into place
            r = json.loads(p.read_text())
            found[r["trial_id"]] = r
    return found


def _wait(predicate, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, f"the sweep ended before {what}:\n{proc.stdout.read()}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def _watch_trainables(raylets: dict[int, str], seen: set[str], stop: threading.Event) -> None:
    """Adds to ``seen`` the node of every Tune trainable process (``ray::ImplicitFunc``, a child of its node's
    raylet) found while the sweep runs."""
    while not stop.is_set():
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if ppid in raylets and b"ImplicitFunc" in (entry / "cmdline").read_bytes():
                    seen.add(raylets[ppid])
            except (OSError, ValueError, IndexError):
                continue
        stop.wait(0.2)


def test_sweep_on_a_cluster_survives_a_dead_node_and_a_dead_driver(tmp_path, monkeypatch):
    from ray.cluster_utils import Cluster

    (tmp_path / "corpus.txt").write_text(CORPUS)
    space_file = tmp_path / "cluster.yaml"
    space_file.write_text(SPACE.format(corpus=tmp_path / "corpus.txt"))
    planned = {c.trial_id for c in load_space(space_file).plan()}
    out = tmp_path / "sweep"
    tmpdir = tempfile.mkdtemp(prefix="lsc", dir="/tmp")  # short: Ray puts unix sockets below it
    monkeypatch.setenv("RAY_TMPDIR", tmpdir)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    seen: set[str] = set()
    stop = threading.Event()
    try:
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        raylets = {node.all_processes["raylet"][0].process.pid: name
                   for name, node in (("head", cluster.head_node), ("worker0", workers[0]), ("worker1", workers[1]))}
        watcher = threading.Thread(target=_watch_trainables, args=(raylets, seen, stop), daemon=True)
        watcher.start()

        def sweep(*extra: str) -> subprocess.Popen:
            cmd = [sys.executable, "-m", "lolsearch", "sweep", str(space_file), "--out", str(out),
                   "--address", cluster.address, "--yes", *extra]
            return subprocess.Popen(cmd, env=dict(os.environ), cwd=ROOT, start_new_session=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        proc = sweep()
        try:
            # a worker node dies while a trainable runs there: its trial is retried on a live node
            _wait(lambda: "worker0" in seen, proc, 400, "a trainable on worker0")
            cluster.remove_node(workers[0], allow_graceful=False)
            # then the driver dies: --resume finishes the sweep on the same cluster
            _wait(lambda: len(records(out)) >= 3, proc, 400, "three records")
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        first = records(out)
        assert all(r["status"] == "ok" for r in first.values()), first
        resumed = sweep("--resume")
        output, _ = resumed.communicate(timeout=600)
        assert resumed.returncode == 0, output
    finally:
        stop.set()
        cluster.shutdown()
        shutil.rmtree(tmpdir, ignore_errors=True)

    final = records(out)
    assert set(final) == planned, "a trial was lost"
    assert all(r["status"] == "ok" for r in final.values()), {k: r["error"] for k, r in final.items()}
    for trial_id, record in first.items():  # finished before the driver died: kept, not run again
        assert final[trial_id]["env"]["started_at"] == record["env"]["started_at"]
    sweep_json = json.loads((out / "sweep.json").read_text())
    assert sweep_json["cluster"]["CPU"] in (2.0, 3.0) and sweep_json["resumed_at"]  # the cluster's, not a local Ray
    assert len(seen) >= 2, f"trials ran only on {seen}"  # spread over the nodes, not just the head
