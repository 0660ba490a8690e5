"""Foundations with no torch: input errors, the registry, and the one atomic write / lock / on-disk cache."""
