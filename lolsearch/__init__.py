"""lolsearch: search and ablate LoLCATs-style linearizations of LLMs."""

__version__ = "0.1.0"
