"""The data layer: audio I/O, stage 00 (checks and folds), tasks, windows and metadata.

``audio`` (reading, resampling, windows of a recording), ``prepare`` (stage 00), ``folds``
(cross-validation schemes), ``tasks`` (targets and probability columns per task type),
``windows`` (a split's cached windows for training and prediction, aggregation per recording),
``metadata`` (per-fold encoding of metadata columns), ``demo`` (a synthetic competition).
"""
