"""The training layer: the fold loop, optimisers and schedules, precision, EMA, losses, augmentation.

``experiment`` (stage 02: every fold of an experiment), ``loop`` (one fold), ``optim``
(optimisers, schedules), ``precision`` (autocast, channels-last), ``ema``, ``losses``,
``augment`` (mixup, cutmix, spec_augment), ``wave_augment`` (waveform augmentations, not yet wired
into training), ``transforms`` (the only torchaudio import).
"""
