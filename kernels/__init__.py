"""Triton kernels for hybrid window + linear attention, installed as ``lolsearch.kernels``."""
