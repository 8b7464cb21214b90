"""``hf_embeddings``: frozen embeddings of a Hugging Face audio model read from a local folder.

Models (Hugging Face ``transformers``, loaded with ``local_files_only=True`` and
``HF_HUB_OFFLINE=1``: nothing is ever downloaded): wav2vec 2.0 (Baevski et al. 2020), HuBERT
(Hsu et al. 2021), WavLM (Chen et al. 2022) and data2vec-audio (Baevski et al. 2022), waveform
encoders whose ``AutoModel`` gives ``hidden_states`` (the convolutional encoder's projected output,
then one per transformer layer), and the Audio Spectrogram Transformer (AST, Gong et al. 2021),
whose feature extractor makes its Kaldi fbank input and whose patch tokens are averaged over
frequency into time frames here. The folder is what ``save_pretrained`` writes
(:data:`LAYOUT`).

Per window of the competition's grid (as every spectrogram-kind set, :mod:`lib.features.cache`):
the window (at the competition's rate) is resampled explicitly to the model's rate (its feature
extractor's ``sampling_rate``; :func:`lib.data.audio.resample`), goes through the feature
extractor and the model (``torch.no_grad``, batches of ``batch_size`` windows, CUDA when present),
and one hidden state (``layer``) is kept: ``(frames, hidden)``. ``pooling: frames`` caches it as a
spectrogram-like stack ``(1, hidden, frames)`` that any network trains on; ``mean`` / ``mean_std``
cache its mean (and standard deviation) over frames as the set's scalars ``(hidden,)`` /
``(2 hidden,)`` (the stack is then a single zero), for the ``hgb`` / ``logreg`` members.

The shared loading code (:func:`read_folder`, :func:`load_model`, :func:`resolve_layer`,
:func:`select_layer`, :func:`token_frames`) also serves the fine-tunable model
:mod:`lib.models.hf_audio`.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from ..core.artifacts import file_hash
from ..core.errors import ConfigError
from ..data import audio

SUPPORTED = {"wav2vec2": "wav2vec 2.0", "hubert": "HuBERT", "wavlm": "WavLM", "data2vec-audio": "data2vec-audio",
             "audio-spectrogram-transformer": "AST"}
"""``config.model_type`` of the supported architectures -> their name."""
AST = "audio-spectrogram-transformer"
WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
LAYOUT = ("the folder that save_pretrained writes: config.json, model.safetensors (or pytorch_model.bin) and "
          "preprocessor_config.json (the feature extractor's)")
HOW = ("on a machine with internet run AutoModel.from_pretrained(\"facebook/wav2vec2-base\").save_pretrained(DIR) and "
       "AutoFeatureExtractor.from_pretrained(\"facebook/wav2vec2-base\").save_pretrained(DIR), then copy DIR here")
TRAINING_ONLY = ("masked_spec_embed",)
"""Weights that only pretraining's masking reads, which CTC and classification checkpoints may
lack (transformers starts them at random; frozen embeddings never read them)."""
LAYER_NAMES = ("middle", "mean")
POOLINGS = ("frames", "mean", "mean_std")


def offline() -> None:
    """Forbid the Hugging Face hub for this process (``HF_HUB_OFFLINE=1``, ``TRANSFORMERS_OFFLINE=1``)
    and silence transformers' progress bars; returns nothing. Raises ``ConfigError`` when the
    ``transformers`` package is not installed (requirements.txt and requirements-infer.txt list it)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise ConfigError("the Hugging Face members (features hf_embeddings, model hf_audio) need the transformers "
                          "package: pip install -r requirements-infer.txt (offline_kit.py packs its wheel when the "
                          "notebook's image lacks it)") from None

    hf_logging.disable_progress_bar()


def _refuse(key: str, path, problem: str) -> ConfigError:
    return ConfigError(f"{key}: {str(path)!r} {problem}. Nothing is downloaded at run time: expected {LAYOUT}; {HOW}")


def check_kind(model_type: str, key: str, supported=SUPPORTED) -> None:
    """Raise ``ConfigError`` naming ``key`` unless ``model_type`` (a ``config.json``'s) is in ``supported``."""
    if model_type not in supported:
        raise ConfigError(f"{key}: model type {model_type!r} is not supported here; supported: "
                          f"{', '.join(f'{k} ({v})' for k, v in supported.items())}")


def read_folder(path, key: str, weights: bool = True, supported: dict = SUPPORTED):
    """The ``(config, feature_extractor)`` of a local model folder (``AutoConfig`` and
    ``AutoFeatureExtractor``, ``local_files_only=True``). ``key`` names the config key in errors
    (``features.params.model_dir``, ``model.params.pretrained``). Raises ``ConfigError`` (saying
    that nothing is downloaded and the expected :data:`LAYOUT`) for a missing folder, one without
    ``config.json``, weights (when ``weights``) or ``preprocessor_config.json``, a config that
    transformers cannot read, or a model type not in ``supported`` (default :data:`SUPPORTED`)."""
    p = Path(path).expanduser() if path else None
    if p is None or not p.is_dir():
        raise _refuse(key, path, "is not a folder" + (f" (looked for {p.resolve()}: a relative path is taken from the "
                                                      f"folder the stage runs in, the project folder under run_all.sh)"
                                                      if p is not None and not p.is_absolute() else ""))
    if not (p / "config.json").is_file():
        below = sorted(q.parent for pattern in ("*/config.json", "snapshots/*/config.json") for q in p.glob(pattern))
        raise _refuse(key, path, "has no config.json" + (f" (a folder below it has one: {below[0]}; give that folder"
                                                         f"{', a Hugging Face cache snapshot' * ('snapshots' in below[0].parts)})"
                                                         if below else ""))
    if weights and not any((p / w).is_file() for w in WEIGHTS):
        raise _refuse(key, path, "has no weights (model.safetensors or pytorch_model.bin)")
    if not (p / "preprocessor_config.json").is_file():
        raise _refuse(key, path, "has no preprocessor_config.json (the feature extractor, with its sampling_rate)")
    offline()
    from transformers import AutoConfig, AutoFeatureExtractor

    try:
        config = AutoConfig.from_pretrained(p, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _refuse(key, path, f"holds a config.json transformers cannot build a model from ({_first_line(exc)})")
    check_kind(config.model_type, key, supported)
    try:
        fe = AutoFeatureExtractor.from_pretrained(p, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _refuse(key, path, f"holds a preprocessor_config.json transformers cannot read ({_first_line(exc)})")
    return config, fe


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def load_model(path, key: str):
    """The pretrained ``AutoModel`` of a folder that :func:`read_folder` accepted
    (``local_files_only=True``), in eval mode on the CPU. Raises ``ConfigError`` naming ``key``
    when its weights do not load (a corrupt file) or leave any of the model's weights out but
    :data:`TRAINING_ONLY` ones (a foreign file, e.g. another architecture's weights beside this ``config.json``: transformers
    would initialise those at random with a warning only), or that hold weights inside the
    model's own modules which it lacks (another architecture's file with more weights, e.g.
    WavLM's beside a wav2vec2 ``config.json``: transformers would drop them). Weights of modules
    the model does not have (a pretraining, CTC or classification head: ``quantizer``,
    ``lm_head``, ``classifier`` ...) are ignored, as transformers does."""
    offline()
    from transformers import AutoModel

    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report of mismatched weights: said below, in our words
    try:
        model, info = AutoModel.from_pretrained(Path(path).expanduser(), local_files_only=True, output_loading_info=True,
                                                ignore_mismatched_sizes=True)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise _refuse(key, path, f"holds weights transformers cannot load ({_first_line(exc)})")
    finally:
        hf_logging.set_verbosity(level)
    missing = sorted(str(k) for k in info["missing_keys"] if not str(k).endswith(TRAINING_ONLY))
    missing += [f"{k} {list(a)} in the file, {list(b)} in the model"
                for k, a, b in sorted(info.get("mismatched_keys") or [], key=lambda m: str(m[0]))]
    if missing:
        raise _refuse(key, path, f"holds weights that leave {len(missing)} of the model's weights out or of another "
                                 f"shape (e.g. {', '.join(map(str, missing[:3]))}): another model's file?")
    own = {k.split(".")[0] for k in model.state_dict()}  # the model's modules: a head is none of them
    extra = sorted(str(k) for k in info.get("unexpected_keys") or [] if str(k).split(".")[0] in own)
    if extra:
        raise _refuse(key, path, f"holds {len(extra)} weights inside the model's own modules that it does not have "
                                 f"(e.g. {', '.join(extra[:3])}): another architecture's file beside this "
                                 f"config.json?")
    return model.eval()


def model_files(path) -> list[str]:
    """The names of the files of a model folder that loading it reads: ``config.json``,
    ``preprocessor_config.json``, the weight files and, for sharded weights, every shard its
    index names. What :func:`folder_fingerprint` hashes and a bundle packs."""
    p = Path(path).expanduser()
    names = [n for n in ("config.json", "preprocessor_config.json", *WEIGHTS) if (p / n).is_file()]
    for index in (n for n in names if n.endswith(".index.json")):
        names += sorted(set(json.loads((p / index).read_text()).get("weight_map", {}).values()))
    return names


def folder_fingerprint(path) -> dict:
    """``{file name: SHA-256}`` of a model folder's :func:`model_files` (the cache's key changes
    when the model does; the folder's path is no part of it, so a folder moved elsewhere, e.g. into
    a bundle, is the same model)."""
    p = Path(path).expanduser()
    return {name: file_hash(p / name) for name in model_files(p)}


def resolve_layer(layer, n_states: int, key: str, allowed=LAYER_NAMES):
    """The hidden state to keep of ``n_states`` (``num_hidden_layers + 1``: index 0 is the input of
    the first transformer layer): an int index (negative counts from the end) -> ``0 .. n - 1``;
    ``"middle"`` -> ``n_states // 2``; another name of ``allowed`` (``"mean"``: the average of all
    states; the model's ``"weighted"``) as it is. Raises ``ConfigError`` naming ``key``."""
    if isinstance(layer, int) and not isinstance(layer, bool) and -n_states <= layer < n_states:
        return layer % n_states
    if layer == "middle":
        return n_states // 2
    if layer in allowed:
        return layer
    raise ConfigError(f"{key}: layer {layer!r} is not an index into the model's {n_states} hidden states "
                      f"(-{n_states} to {n_states - 1}) or one of {', '.join(allowed)}")


def select_layer(hidden_states, layer, weights=None):
    """One ``(B, T, H)`` tensor from a model's ``hidden_states`` (a tuple of ``(B, T, H)``): index
    ``layer`` (an int), their mean (``"mean"``) or their sum weighted by ``softmax(weights)``
    (``"weighted"``; SUPERB's learnt layer mix, Yang et al. 2021)."""
    import torch

    if layer == "mean":
        return torch.stack(hidden_states).mean(0)
    if layer == "weighted":
        w = torch.softmax(weights, 0).to(hidden_states[0].dtype)
        return (torch.stack(hidden_states) * w[:, None, None, None]).sum(0)
    return hidden_states[layer]


def token_frames(h, config, n_samples: int, sample_rate: int):
    """The time frames of an AST's tokens: ``h (B, 2 + f * t, H)`` (CLS, distillation, then the
    patches frequency-major) -> ``(B, t', H)``, the patch tokens averaged over frequency, keeping
    the ``t'`` time patches that start within the ``n_samples`` of signal (the feature extractor
    pads to ``max_length`` frames of 10 ms). Other models' ``(B, T, H)`` are returned as they are."""
    if config.model_type != AST:
        return h
    f = (config.num_mel_bins - config.patch_size) // config.frequency_stride + 1
    t = (config.max_length - config.patch_size) // config.time_stride + 1
    shift, window = int(0.010 * sample_rate), int(0.025 * sample_rate)
    frames = 1 + max(0, n_samples - window) // shift
    keep = min(t, max(1, math.ceil(frames / config.time_stride)))
    return h[:, 2:].reshape(len(h), f, t, h.shape[-1]).mean(1)[:, :keep]


def frame_hop(config, sample_rate: int) -> int:
    """Samples (at the model's ``sample_rate``) between two output frames: the product of the
    convolutional encoder's strides (320 for wav2vec 2.0 / HuBERT / WavLM), or an AST's
    ``time_stride`` frames of 10 ms."""
    if config.model_type == AST:
        return config.time_stride * int(0.010 * sample_rate)
    return int(np.prod(config.conv_stride))


def config_bytes(config, fe) -> bytes:
    """The model's ``config.json`` and feature extractor settings as UTF-8 JSON (what a fine-tuned
    checkpoint keeps to rebuild the architecture without the folder: :mod:`lib.models.hf_audio`)."""
    return json.dumps({"config": config.to_dict(), "feature_extractor": fe.to_dict()}, sort_keys=True,
                      default=str).encode()


class HfEmbeddings:
    """The ``hf_embeddings`` feature set (see the module docstring).

    ``model_dir``: the local folder (:data:`LAYOUT`). ``layer``: an index into ``hidden_states``
    (0: before the first transformer layer; -1: the last), ``"middle"`` (the default:
    ``(num_hidden_layers + 1) // 2``, layer 6 of a 12-layer base model; the middle layers of wav2vec 2.0
    carry the most acoustic and phonetic information and the last ones specialise towards the
    pre-training target, Pasad et al. 2021; SUPERB's learnt layer weights on paralinguistic tasks
    favour them too) or ``"mean"`` (the average of all hidden states). ``pooling``: ``frames``
    (``(1, hidden, frames)`` stacks), ``mean`` or ``mean_std`` (scalars). ``reduce``: ``N`` projects
    each frame to ``N`` dimensions with a fixed Gaussian random matrix (seed 0, scaled by
    ``1 / sqrt(N)``; Johnson-Lindenstrauss: distances kept within a small factor; a PCA would have to be fitted on
    the training windows, which the cache, shared by every fold, must not see). ``resample_type``:
    :data:`lib.data.audio.RESAMPLERS`. ``batch_size``: windows per forward pass.

    Output per window of ``samples`` at ``sr`` Hz: ``spec (1, hidden or N, frames)`` with ``frames
    = ceil(samples * rate / sr)`` samples through the encoder (about 50 per second for the waveform
    encoders), or ``(1, 1, 1)`` zeros; ``scalars (0,)`` or ``(hidden)`` / ``(2 hidden)``. Raises
    ``ConfigError`` (naming ``features.params.*``) for a folder that does not fit
    (:func:`read_folder`), a bad ``layer``, ``pooling``, ``reduce`` (also one not below the hidden
    size), ``resample_type`` or ``batch_size``.
    """

    kind = "spectrogram"  # the input kind of its cache (lib.inputs.INPUT_KINDS)

    def __init__(self, model_dir: str | None = None, layer: int | str = "middle", pooling: str = "frames",
                 reduce: int | None = None, resample_type: str = "soxr_hq", batch_size: int = 16):
        if pooling not in POOLINGS:
            raise ConfigError(f"features.params.pooling {pooling!r} is not one of {', '.join(POOLINGS)}")
        if reduce is not None and not (isinstance(reduce, int) and reduce > 0):
            raise ConfigError(f"features.params.reduce {reduce!r} must be a positive number of dimensions or null")
        if resample_type not in audio.RESAMPLERS:
            raise ConfigError(f"features.params.resample_type {resample_type!r} is not one of {audio.RESAMPLERS}")
        if not (isinstance(batch_size, int) and batch_size > 0):
            raise ConfigError(f"features.params.batch_size {batch_size!r} must be a positive number of windows")
        self.config, self.fe = read_folder(model_dir, "features.params.model_dir")
        self.layer = resolve_layer(layer, self.config.num_hidden_layers + 1, "features.params.layer")
        if reduce is not None and reduce >= self.config.hidden_size:  # a random projection up adds nothing
            raise ConfigError(f"features.params.reduce {reduce} is not below the model's hidden size "
                              f"{self.config.hidden_size} ({model_dir}): use fewer dimensions, or null to keep them all")
        self.rate, self.batch_size, self.pooling, self.reduce = int(self.fe.sampling_rate), batch_size, pooling, reduce
        self.model_dir = str(Path(model_dir).expanduser().resolve())
        self.settings = {"model_type": self.config.model_type, "model_sample_rate": self.rate,  # the model by its files
                         "layer": layer, "pooling": pooling, "reduce": reduce, "resample_type": resample_type,
                         "files": folder_fingerprint(model_dir)}
        dim = reduce or self.config.hidden_size
        self.channel_names = ["hf_frames" if pooling == "frames" else "none"]
        self.scalar_names = [] if pooling == "frames" else [f"hf_mean_{i}" for i in range(dim)] + (
            [f"hf_std_{i}" for i in range(dim)] if pooling == "mean_std" else [])
        self.hop_length = None  # frames: set from the windows' rate when they come (the manifest's frames per second)
        self.model, self.projection = None, None
        import torch

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.max_workers = 1 if self.device.type == "cuda" else None  # CUDA does not survive stage 01's fork

    def check_window(self, seconds: float) -> None:
        """Raise ``ConfigError`` when windows of ``seconds`` (``audio.clip_seconds``) are longer than
        an AST hears: its feature extractor cuts every input to ``max_length`` frames of 10 ms."""
        if self.config.model_type == AST and seconds > (longest := (self.fe.max_length - 1) * 0.010 + 0.025):
            raise ConfigError(f"features.params.model_dir: this AST hears {longest:.3f} s at most (its feature "
                              f"extractor's max_length {self.fe.max_length} frames of 10 ms) and would cut every "
                              f"window of audio.clip_seconds {seconds:g} s to it: set audio.clip_seconds to at most "
                              f"{longest:.3f} (long recordings are then predicted window by window, audio.hop_seconds)")

    def prepare(self) -> None:
        """Load the model once (before stage 01 forks its workers) and the projection of ``reduce``."""
        if self.model is None:
            self.model = load_model(self.model_dir, "features.params.model_dir").to(self.device)
            if self.reduce:
                g = np.random.default_rng(0).standard_normal((self.config.hidden_size, self.reduce))
                self.projection = (g / math.sqrt(self.reduce)).astype(np.float32)

    def __call__(self, y: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
        """One window ``(samples,)`` at ``sr`` Hz -> ``(spec, scalars)`` (see the class docstring)."""
        audio.check_clip(y)
        spec, scalars = self.batch(y[None], sr)
        return spec[0], scalars[0]

    def batch(self, windows: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
        """Windows ``(n, samples)`` at ``sr`` Hz -> ``spec (n, 1, D, frames)``, ``scalars (n, S)``
        float32: resampled to the model's rate, embedded in batches of ``batch_size``, pooled."""
        self.prepare()
        x = audio.resample(np.asarray(windows, np.float32), sr, self.rate, self.settings["resample_type"])
        h = np.concatenate([self.embed(x[i:i + self.batch_size]) for i in range(0, len(x), self.batch_size)])
        if self.pooling == "frames":
            self.hop_length = frame_hop(self.config, self.rate) * sr / self.rate
            return np.ascontiguousarray(h.transpose(0, 2, 1)[:, None]), np.zeros((len(h), 0), np.float32)
        pooled = [h.mean(1)] + ([h.std(1)] if self.pooling == "mean_std" else [])
        return np.zeros((len(h), 1, 1, 1), np.float32), np.concatenate(pooled, 1).astype(np.float32)

    def embed(self, x: np.ndarray) -> np.ndarray:
        """Waveforms ``(b, samples)`` at the model's rate -> the chosen hidden state ``(b, frames, D)``
        float32 (feature extractor, model forward with ``output_hidden_states``, :func:`select_layer`,
        :func:`token_frames`, the projection of ``reduce``)."""
        import torch

        inputs = self.fe(list(x), sampling_rate=self.rate, return_tensors="pt")
        with torch.no_grad():
            out = self.model(**{k: v.to(self.device) for k, v in inputs.items()}, output_hidden_states=True)
            h = token_frames(select_layer(out.hidden_states, self.layer), self.config, x.shape[1], self.rate)
        h = h.float().cpu().numpy()
        return h @ self.projection if self.projection is not None else h
