"""The package's imports point down and form no cycle (function-level imports count too)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "lolsearch"
KERNELS = ROOT / "kernels"

# Lower rank = lower layer; a module may import its own rank or lower, never higher.
RANKS = {
    "core": 0, "config": 1, "attention": 2, "kernels": 2, "data": 2, "models": 2,
    "trial": 3, "search": 3, "sweep": 4, "report": 4, "perf": 5, "cli": 6, "__main__": 7,
}
NO_TORCH = ("lolsearch.core", "lolsearch.config", "lolsearch.search", "lolsearch.report", "lolsearch.trial.record")


def _modules() -> dict[str, Path]:
    mods = {}
    for base, name in ((PKG, "lolsearch"), (KERNELS, "lolsearch.kernels")):
        for path in base.rglob("*.py"):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join([name, *parts])] = path
    return mods


def _imports(path: Path, module: str, known: set[str]) -> set[str]:
    """lolsearch modules imported anywhere in ``path`` (``from pkg import sub`` resolves to the submodule)."""
    out = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                parts = module.split(".")
                pkg = parts[: len(parts) - node.level + (path.name == "__init__.py")]
                base = ".".join([*pkg, base] if base else pkg)
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name.startswith("lolsearch") and name != module:
                out.add(name)
    return out


def _rank(module: str) -> int | None:
    parts = module.split(".")
    return RANKS.get(parts[1]) if len(parts) > 1 else None


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {m: _imports(p, m, known) for m, p in mods.items()}


def test_every_top_level_module_has_a_rank():
    missing = {m.split(".")[1] for m in _graph() if m != "lolsearch" and _rank(m) is None}
    assert not missing, f"add these to RANKS: {sorted(missing)}"


def test_imports_point_down():
    upward = []
    for mod, deps in _graph().items():
        for dep in deps:
            if dep == "lolsearch":
                upward.append(f"{mod} -> lolsearch (the root package)")
            elif mod != "lolsearch" and _rank(dep) > _rank(mod):
                upward.append(f"{mod} -> {dep}")
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


def find_cycles(graph: dict[str, set[str]]) -> list[str]:
    """Every back edge of a depth-first walk, as ``a -> b -> ... -> a``."""
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                cycles.append(" -> ".join([*stack[stack.index(d):], d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return cycles


def test_no_import_cycles():
    cycles = find_cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_checks_catch_planted_problems(tmp_path):
    # a function-level import counts, and `from pkg import sub` resolves to the submodule
    a = tmp_path / "a.py"
    a.write_text("def f():\n    from lolsearch.report import records\n")
    deps = _imports(a, "lolsearch.trial.x", {"lolsearch.report", "lolsearch.report.records"})
    assert deps == {"lolsearch.report.records"}
    assert _rank("lolsearch.report.records") > _rank("lolsearch.trial.x")  # so it would be flagged as upward
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a -> b -> c -> a"]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_lower_layers_import_no_torch_or_ray():
    code = f"import sys\nfor m in {NO_TORCH!r}: __import__(m)\nprint(sorted(m for m in ('torch', 'ray') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"imported: {out.stdout.strip()}"


def test_module_sizes_and_flat_modules():
    big = [f"{p.relative_to(ROOT)}: {n}" for p in [*PKG.rglob("*.py"), *KERNELS.glob("*.py")]
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > 450]
    assert not big, f"modules over 450 lines: {big}"
    flat = sorted(p.name for p in PKG.glob("*.py"))
    assert flat == ["__init__.py", "__main__.py", "cli.py", "perf.py"], flat
