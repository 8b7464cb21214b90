"""What orchestrates runs, above the fold trainer: ``experiment`` (stage 02: the folds of one or
several experiments, their records and merge), ``distributed`` (joining torchrun's process group,
each rank's device, dealing folds out), ``sweep`` (Optuna studies over config values),
``self_training`` (distillation targets and pseudo-labelled folders from the blend of stage 04).
"""
