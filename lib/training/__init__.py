"""The training layer: one fold's training and its parts.

``loop`` (:class:`~lib.training.loop.FoldTrainer`: set-up, epochs, validation, finish),
``callbacks`` (early stopping, the per-epoch resume state, TensorBoard, SWA, the epoch log),
``classical`` (the scikit-learn members' fold), ``optim`` (optimisers, schedules), ``losses``,
``augment`` (mixup, cutmix, spec_augment), ``wave_augment`` (waveform augmentations), ``ema``,
``ddp`` (collectives of ranks that train together), ``transforms`` (the only torchaudio import).
Runs of whole experiments: :mod:`lib.runs`.
"""
