"""lolsearch: search and ablate LoLCATs-style linearizations of LLMs."""

__version__ = "0.1.0"


def _checkout_kernels() -> None:
    """Run from a source checkout without ``pip install`` (e.g. on an offline GPU box): serve the top-level
    ``kernels/`` folder as ``lolsearch.kernels``, as the installed package mapping does."""
    import importlib.util
    import os
    import sys

    if "lolsearch.kernels" in sys.modules or importlib.util.find_spec("lolsearch.kernels") is not None:
        return
    kdir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kernels")
    init = os.path.join(kdir, "__init__.py")
    if not os.path.isfile(init):
        return
    spec = importlib.util.spec_from_file_location("lolsearch.kernels", init, submodule_search_locations=[kdir])
    module = importlib.util.module_from_spec(spec)
    sys.modules["lolsearch.kernels"] = module
    spec.loader.exec_module(module)
    globals()["kernels"] = module


_checkout_kernels()


def __getattr__(name: str):
    """``lolsearch.load`` and ``lolsearch.load_tokenizer``, imported on first use (``import lolsearch`` stays light)."""
    if name in ("load", "load_tokenizer"):
        from lolsearch.trial import export

        return getattr(export, name)
    raise AttributeError(f"module 'lolsearch' has no attribute '{name}'")
