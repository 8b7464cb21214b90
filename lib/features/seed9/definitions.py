"""The seed9 stack's fixed settings, names and the batched implementation's tolerances.

Definitions: ``../shared/DESIGN.md`` §5. The tolerances of :func:`lib.features.seed9.batch.compute_seed9_batch`
against :func:`lib.features.seed9.reference.compute_seed9`, and what was measured, are written up in
``bench/README.md`` ("seed9: batched against reference").
"""
from __future__ import annotations

N_FFT = 512
HOP = 256
SR = 16000
N_SAMPLES = 16000
SHAPE = (128, 63)

CHANNEL_NAMES = (
    "chroma", "gammatone", "lpc", "mel", "mel_delta", "mel_delta2", "mfcc", "mod_spec", "tempogram",
)

SCALAR_NAMES = (
    "rms_mean", "rms_std", "rms_max", "rms_min",
    "zcr_mean", "zcr_std", "zcr_max", "zcr_min",
    "centroid_mean", "centroid_std", "centroid_skew",
    "bandwidth_mean", "bandwidth_std",
    "rolloff_mean", "rolloff_std",
    "flatness_mean", "flatness_std",
    "contrast_mean", "contrast_std",
    "env_mean", "env_std", "env_mean_over_std",
    "env_peak_count", "env_peak_height_mean", "env_peak_height_std",
    "low_energy_ratio",
    "flux_mean", "flux_std", "flux_max",
    "wave_skew", "wave_kurtosis", "abs_p90", "abs_p10",
    "acf_lag10ms", "acf_lag20ms", "acf_min_lag",
)

#: Largest absolute difference per z-scored channel of :func:`compute_seed9_batch` against
#: :func:`compute_seed9` (``bench/README.md``: what was measured).
BATCH_CHANNEL_ATOL = {name: 1e-4 for name in CHANNEL_NAMES}
#: ``(rtol, atol)`` per scalar: ``|batch - reference| <= atol + rtol * |reference|``.
BATCH_SCALAR_TOL = {name: (1e-4, 1e-6) for name in SCALAR_NAMES}

