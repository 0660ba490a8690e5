"""Runs a script with the editable install of the checkout taken off the import path, so that PYTHONPATH picks the
source tree: python noedit.py SCRIPT [ARGS...] (here: a tree's kernels/_launch.py pytest ...)."""

import runpy
import sys

sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in str(getattr(f, "__module__", ""))]
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
