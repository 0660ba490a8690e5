"""Search spaces with no torch: the expression language, the space schema and metric names, sampled points,
:class:`~lolsearch.search.space.SearchSpace`."""
