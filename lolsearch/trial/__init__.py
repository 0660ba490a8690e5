"""One trial, stage by stage: surgery, attention transfer, LoRA, evaluation, efficiency (:func:`.run.run_trial`),
and the files of a trial folder (:mod:`.record`). Importing this package imports no torch."""
