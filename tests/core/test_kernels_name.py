"""The top-level name ``kernels`` belongs to PyPI's package (a transformers 5.25+ dependency), not to the checkout's
``kernels/`` folder, even when the checkout's root is on sys.path as ``python -m`` puts it there."""

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHOW = "import kernels; print(kernels.__file__); print(getattr(kernels, 'CUDAProperties', None))"


def _import_from_root(extra_path: str = "") -> list[str]:
    env_path = {"PYTHONPATH": extra_path} if extra_path else {}
    proc = subprocess.run([sys.executable, "-c", SHOW], cwd=ROOT, capture_output=True, text=True, check=True,
                          env={**os.environ, **env_path})
    return proc.stdout.splitlines()


def test_pypi_kernels_wins_over_the_checkout_folder(tmp_path: Path) -> None:
    """A stand-in for PyPI's ``kernels`` (package + dist-info) behind the checkout's root on sys.path."""
    pkg = tmp_path / "kernels"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("CUDAProperties = 'pypi'\n")
    info = tmp_path / "kernels-0.19.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kernels\nVersion: 0.19.1\n")
    (info / "RECORD").write_text("kernels/__init__.py,,\n")
    path, marker = _import_from_root(str(tmp_path))
    assert Path(path) == pkg / "__init__.py" and marker == "pypi"


def test_without_pypi_kernels_the_checkout_folder_stays_importable() -> None:
    try:
        metadata.distribution("kernels")
    except metadata.PackageNotFoundError:
        path, marker = _import_from_root()
        assert Path(path) == ROOT / "kernels" / "__init__.py" and marker == "None"
    else:  # installed here: the name is PyPI's
        path, _ = _import_from_root()
        assert Path(path).parent != ROOT / "kernels"
