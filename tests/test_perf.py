"""perf scaling: k trials per GPU runs a valid copy of the space with resources.gpu = 1/k (sweeps faked)."""

import argparse
import json
import subprocess
from pathlib import Path

from lolsearch import perf
from lolsearch.search.space import load_space

SPACE = Path(__file__).resolve().parents[1] / "spaces" / "scaling.yaml"


def test_scaling_times_each_gpu_count_and_trials_per_gpu(tmp_path: Path, monkeypatch) -> None:
    seen: list[tuple[int, float, float]] = []

    def fake_run(cmd: list[str], **_kw) -> subprocess.CompletedProcess:
        space = load_space(cmd[cmd.index("sweep") + 1])
        out = Path(cmd[cmd.index("--out") + 1])
        seen.append((int(cmd[cmd.index("--gpus") + 1]), space.resources.gpu, space.resources.cpu))
        for i in range(3):
            (out / "trials" / str(i)).mkdir(parents=True)
            (out / "trials" / str(i) / "result.json").write_text(json.dumps({"status": "ok" if i else "failed"}))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(perf.subprocess, "run", fake_run)
    args = argparse.Namespace(space=SPACE, gpus=[1, 2], trials_per_gpu=[1, 4], work=tmp_path)
    df = perf.cmd_scaling(args)
    assert seen == [(1, 1.0, 4.0), (2, 1.0, 4.0), (1, 0.25, 1.0), (2, 0.25, 1.0)]
    assert list(df["trials_per_gpu"]) == [1, 1, 4, 4] and list(df["trials_ok"]) == [2, 2, 2, 2]
    assert df["speedup"].iloc[0] == 1.0 and "efficiency_vs_linear" in df
