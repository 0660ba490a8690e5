"""Training and evaluation text: data sources split into documents (:mod:`.sources`), tokenized and packed
(:mod:`.tokens`)."""

from lolsearch.config.plugins import DATASETS
from lolsearch.data.sources import SPLITS, Document, Source, alpaca_prompt, resolve_files, shakespeare_work
from lolsearch.data.tokens import (
    TokenStream,
    load_documents,
    load_splits,
    packed_batches,
    split_token_count,
    tokenizer_fingerprint,
)

__all__ = [
    "DATASETS", "SPLITS", "Document", "Source", "TokenStream", "alpaca_prompt", "load_documents", "load_splits",
    "packed_batches", "resolve_files", "shakespeare_work", "split_token_count", "tokenizer_fingerprint",
]
