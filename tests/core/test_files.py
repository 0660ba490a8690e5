"""The shared cache: root, atomic files and directories, locks across processes, PyPI downloads."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lolsearch.core import files as cache
from lolsearch.core.files import atomic_dir, atomic_file, atomic_write_text, cache_root, locked, pip_download


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("LOLSEARCH_CACHE", str(root))
    return root


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if cache._TMP_MARK in p.name)


def test_cache_root_env_and_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache_root() == tmp_path / "cache" and cache_root().is_dir()
    monkeypatch.delenv("LOLSEARCH_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "lolsearch"


def test_atomic_dir_publishes_complete_build(tmp_path: Path) -> None:
    final = tmp_path / "entry"
    with atomic_dir(final) as tmp:
        assert not final.exists() and tmp.parent == final.parent
        (tmp / "a.txt").write_text("done")
    assert (final / "a.txt").read_text() == "done"
    assert _leftovers(tmp_path) == []


def test_crashed_build_leaves_no_final_dir(tmp_path: Path) -> None:
    final = tmp_path / "entry"
    with pytest.raises(RuntimeError, match="boom"), atomic_dir(final) as tmp:
        (tmp / "half.bin").write_bytes(b"x" * 100)
        raise RuntimeError("boom")
    assert not final.exists()
    assert _leftovers(tmp_path) == []


def test_atomic_dir_keeps_copy_finished_by_another(tmp_path: Path) -> None:
    final = tmp_path / "entry"
    with atomic_dir(final) as tmp:
        (tmp / "mine").write_text("second")
        final.mkdir()
        (final / "theirs").write_text("first")
    assert sorted(p.name for p in final.iterdir()) == ["theirs"]
    assert _leftovers(tmp_path) == []


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = cache._tmp_sibling(tmp_path / "entry")
    stale = stale.with_name(stale.name.replace(f"-{os.getpid()}-", f"-{int(dead.stdout)}-"))
    stale.mkdir()
    live = cache._tmp_sibling(tmp_path / "entry")  # this process: still building, must stay
    live.mkdir()
    with atomic_dir(tmp_path / "entry"):
        pass
    assert not stale.exists() and live.exists()


def test_atomic_write_keeps_old_content_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "f.json"
    atomic_write_text(path, "old")
    with pytest.raises(KeyError), atomic_file(path) as tmp:
        tmp.write_text("partial")
        raise KeyError("crash")
    assert path.read_text() == "old"
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert _leftovers(path.parent) == []


_WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from lolsearch.core.files import atomic_dir, locked
    final, log = Path(sys.argv[1]), Path(sys.argv[2])
    with locked(final):
        with open(log, "a") as f:
            f.write("enter\\n")
        if not final.is_dir():
            with atomic_dir(final) as tmp:
                (tmp / "built_by").write_text(sys.argv[3])
                time.sleep(0.3)
            with open(log, "a") as f:
                f.write("built\\n")
        with open(log, "a") as f:
            f.write("leave\\n")
    print((final / "built_by").read_text())
    """
)


def test_locked_build_runs_once_across_processes(tmp_path: Path) -> None:
    final, log = tmp_path / "entry", tmp_path / "log.txt"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(final), str(log), str(i)], stdout=subprocess.PIPE, text=True
        )
        for i in range(3)
    ]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(outs)) == 1  # every process sees the one finished build
    events = log.read_text().split()
    assert events.count("built") == 1
    # The lock serializes: enter/leave pairs never interleave.
    assert [e for e in events if e != "built"] == ["enter", "leave"] * 3
    assert _leftovers(tmp_path) == []


def test_lock_is_released_after_use(tmp_path: Path) -> None:
    target = tmp_path / "x"
    with locked(target):
        pass
    with locked(target, timeout=1):  # released: acquiring again does not time out
        pass


def test_pip_download_uses_file_already_in_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    seeded = cache.cache_path("downloads", "pkg-1.0.tar.gz")
    seeded.write_bytes(b"seeded")

    def no_pip(*args: object, **kwargs: object) -> None:
        raise AssertionError("pip must not run when the file is present")

    monkeypatch.setattr(cache, "_run_pip_download", no_pip)
    assert pip_download("pkg==1.0", "pkg-1.0.tar.gz", sdist=True) == seeded


def test_pip_download_failure_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))
    with pytest.raises(RuntimeError, match="pip download --no-deps lolsearch-no-such-pkg==0.0.1"):
        pip_download("lolsearch-no-such-pkg==0.0.1", "lolsearch_no_such_pkg-0.0.1-py3-none-any.whl")
    assert not (cache_root() / "downloads" / "lolsearch_no_such_pkg-0.0.1-py3-none-any.whl").exists()
