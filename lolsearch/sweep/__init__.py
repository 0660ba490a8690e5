"""``lolsearch sweep``, the only place that imports Ray: the driver, the trainable, the Optuna study, progress."""
