"""Provenance of a record: the kernels' settings travel with every result."""

from __future__ import annotations

import os
from importlib.metadata import version

from lolsearch.core.provenance import kernel_settings


def test_kernel_settings_record_triton_and_the_settings_in_effect(monkeypatch):
    for key in [k for k in os.environ if k.startswith("LOLSEARCH_KERNELS_")]:
        monkeypatch.delenv(key)
    got = kernel_settings()
    assert got == {"triton": version("triton"), "kernels_autotune": True, "kernels_fp32_dot": "tf32x3", "kernels_bd": None,
                   "kernels_pps": None, "kernels_min_seg": None, "kernels_quadratic_t": None, "kernels_parallel_t": None,
                   "kernels_parallel_seg": None, "kernels_seg_tile": None, "kernels_gqa_order": None,
                   "kernels_fused_features": True, "kernels_features_16bit": True, "kernels_fused_rope": True, "kernels_fused_xent": True,
                   "kernels_direct_launch": True,
                   "kernels_reg_caps": True}
    monkeypatch.setenv("LOLSEARCH_KERNELS_AUTOTUNE", "off")
    monkeypatch.setenv("LOLSEARCH_KERNELS_SEG_TILE", "128x64")
    monkeypatch.setenv("LOLSEARCH_CACHE", "/elsewhere")  # not a kernel setting
    got = kernel_settings()
    assert got["kernels_autotune"] is False and got["kernels_seg_tile"] == (128, 64) and len(got) == 17


def test_git_sha_marks_uncommitted_changes(tmp_path, monkeypatch):
    import subprocess

    from lolsearch.core.provenance import git_sha

    for key, value in {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                       "GIT_COMMITTER_EMAIL": "t@t"}.items():
        monkeypatch.setenv(key, value)
    assert git_sha(tmp_path) is None  # not a checkout
    run = lambda *args: subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    run("add", "a.py")
    run("commit", "-qm", "a")
    sha = run("rev-parse", "HEAD").stdout.decode().strip()
    assert git_sha(tmp_path) == sha
    (tmp_path / "new.py").write_text("untracked\n")  # untracked files do not make it dirty
    assert git_sha(tmp_path) == sha
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_sha(tmp_path) == sha + "-dirty"
