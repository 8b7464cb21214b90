"""The data layer: audio I/O, stage 00 (checks and folds), tasks and metadata.

``audio`` (reading, resampling, windows of a recording), ``prepare`` (stage 00), ``folds``
(cross-validation schemes), ``tasks`` (targets and probability columns per task type),
``metadata`` (per-fold encoding of metadata columns), ``demo`` (a synthetic competition).
Model inputs built from the feature caches: :mod:`lib.inputs`.
"""
