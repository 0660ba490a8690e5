"""Linearized attention: the reference, the chunked PyTorch path, layouts, the layer and its cache."""

from lolsearch.attention.cache import LinearizedCache, new_cache
from lolsearch.attention.chunked import LinearState, hybrid_attention_chunked
from lolsearch.attention.layouts import LAYOUTS, get_layout
from lolsearch.attention.reference import (
    hybrid_attention_reference,
    hybrid_attention_weights_reference,
    linear_attention_reference,
    softmax_attention_reference,
)

__all__ = [
    "LAYOUTS",
    "LinearizedCache",
    "LinearState",
    "get_layout",
    "hybrid_attention_chunked",
    "hybrid_attention_reference",
    "hybrid_attention_weights_reference",
    "linear_attention_reference",
    "new_cache",
    "softmax_attention_reference",
]
