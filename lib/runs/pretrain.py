"""``pretrain.py`` core: self-supervised pretraining of an experiment's network on the competition's
own audio (:mod:`lib.training.ssl`: BYOL-A, Niizumi et al. 2021; or SimCLR, Chen et al. 2020), for
fine-tuning with ``model.params.pretrained`` (:mod:`lib.models.pretrained_weights`;
docs/self-supervised.md).

The audio comes from the experiment's cached feature set (stage 01) of the splits in
``pretrain.splits`` (default train and test) and, on the waveform path, the files under the
folders of ``pretrain.extra_audio``. **No label is ever read**: the split tables are loaded
without their target columns, so test audio may be used and no fold's validation labels are seen.

One result under a record (:mod:`lib.core.artifacts`): ``pretrained/<exp>.pt`` (the checkpoint,
which holds the loss per epoch too) under ``pretrained/<exp>.record.json``, removed first and
written last, so an interrupted run never leaves a checkpoint taken for finished; the two files
copied elsewhere are all that fine-tuning needs. ``pretrained/<exp>_log.csv`` (the loss per
epoch, for reading) is written before them. ``pretrained/<exp>.state.pt`` (every network, the
optimiser, the history and the random generators after each finished epoch) lets a killed run
resume at its last finished epoch.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..core.device import autocast, get_device, place_model
from ..core.errors import AudioError, ConfigError, TrainingError
from ..core.paths import Outputs
from ..core.utils import atomic_path, fingerprint, load_tensors_only, seed_everything, write_csv
from ..core.artifacts import file_hash
from ..core.progress import progress
from ..data.audio import defects as audio_defects
from ..data.audio import header as audio_header
from ..data.audio import load as load_audio
from ..inputs import SplitInputs, WaveData, load_inputs
from ..models import MODELS, build_model
from ..models.pretrained_weights import FORMAT, TRANSFER_PARAMS, backbone_state, describe, takes_generic
from ..training.loop import input_stats
from ..training.optim import build_optimizer
from ..training.ssl import SSLLearner, ViewMaker, post_norm
from ..training.wave_augment import AUDIO_SUFFIXES, WaveAugmenter

FORMAT_VERSION = 1
LABEL_COLUMNS = ("target", "fine_target")
"""Columns of the split tables dropped before any audio is loaded: no label is ever read."""
STATS_WINDOWS = 4096
"""At most this many evenly spaced windows per split give the input statistics."""


def check_pretrain(cfg: dict, out: Outputs) -> list[str]:
    """Check what pretraining needs before any work: a network that takes ``pretrained`` from
    :mod:`lib.models.pretrained_weights`, stage 00's tables, ``extra_audio`` folders that exist
    and only with waveform features. Returns the splits to read (``test`` dropped when the
    competition has none). Raises ``ConfigError`` naming the key (also for ``splits: [test]``
    without a test set), ``MissingArtifact`` naming the stage."""
    name = cfg["model"]["name"]
    if not takes_generic(MODELS.get(name, "model.name")):
        nets = [n for n in MODELS.names() if takes_generic(MODELS.get(n))]
        raise ConfigError(f"model.name: pretrain.py pretrains the networks that load its checkpoints "
                          f"({', '.join(nets)}); {name!r} is not one (cnn14 and timm load their own published "
                          f"weights, scikit-learn members have no trunk)")
    pc = cfg["pretrain"]
    if pc["extra_audio"] and cfg["features"]["name"] != "waveform":
        raise ConfigError(f"pretrain.extra_audio needs waveform input (features: {{name: waveform}} and a frontend); "
                          f"this experiment reads the cached feature set {cfg['features']['name']!r}")
    for folder in pc["extra_audio"]:
        if not Path(folder).expanduser().is_dir():
            raise ConfigError(f"pretrain.extra_audio: {folder} is not a folder")
    splits = [s for s in pc["splits"] if s == "train" or out.has_test()]
    if not splits:
        raise ConfigError(f"pretrain.splits {pc['splits']}: this competition has no test set; add train "
                          f"(pretraining reads no label of it)")
    return splits


def load_splits(out: Outputs, cfg: dict, splits: list[str]) -> dict[str, SplitInputs]:
    """The inputs of each split (``train``, ``test``) from the experiment's feature cache, on the
    CPU, loaded from tables without their label columns (:data:`LABEL_COLUMNS`). Raises
    ``MissingArtifact`` naming ``00_prepare.py`` or ``01_features.py``."""
    comp = out.load_competition()
    return {s: load_inputs(out, cfg, s, out.load_split(s).drop(columns=list(LABEL_COLUMNS), errors="ignore"), comp,
                           torch.device("cpu")) for s in splits}


def extra_inputs(folders: list[str], manifest: dict, comp: dict, own_paths=()) -> tuple[WaveData | None, list, list]:
    """The audio files (wav, flac, ogg, mp3) under ``folders`` (recursively) as one more split of
    whole recordings at the cache's sample rate (``manifest``), mono as the competition's
    ``audio.channel`` says: ``(WaveData, [(path, SHA-256), ...], notes)``, or ``(None, [], [])``
    without folders. ``notes`` say what was converted: files resampled (from which rates, with
    ``audio.resample_type``) and files of several channels. Raises ``ConfigError`` for folders
    without audio and for files whose bytes are those of the competition's own recordings
    (``own_paths``: stage 00's train and test paths; ``pretrain.splits`` chooses those, and a test
    file would be read even with ``splits: [train]``), ``AudioError`` naming a bad file (unreadable,
    or truncated or holding non-finite samples: :func:`lib.data.audio.defects`, as stage 00)."""
    if not folders:
        return None, [], []
    files = sorted(f for d in folders for f in Path(d).expanduser().rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise ConfigError(f"pretrain.extra_audio: no audio files ({', '.join(AUDIO_SUFFIXES)}) under {folders}")
    hashes = [file_hash(f) for f in files]
    sizes = {f.stat().st_size for f in files}  # by their bytes (a copy elsewhere is the same recording); hashed
    own = {file_hash(p) for p in set(own_paths) if os.path.getsize(p) in sizes}  # only where a size matches
    theirs = [f for f, h in zip(files, hashes) if h in own]
    if theirs:
        raise ConfigError(f"pretrain.extra_audio: {len(theirs)} of its {len(files)} file(s) are the competition's own "
                          f"recordings (e.g. {theirs[0]}): pretrain.splits chooses those (train, test); give folders "
                          f"of other audio")
    a, rate = comp["audio"], manifest["sample_rate"]
    headers = [audio_header(f) for f in files]
    bad = [m for f, h in zip(files, headers) for m in audio_defects(f, h)]  # as stage 00 refuses them
    if bad:
        raise AudioError(f"pretrain.extra_audio: {len(bad)} file(s) cannot be used: " + "; ".join(bad[:5])
                         + (" ..." if len(bad) > 5 else "") + ": remove them from the folder(s) or repair them")
    waves = [load_audio(f, rate, a["channel"], a["resample_type"])[0] for f in files]
    offsets = np.concatenate([[0], np.cumsum([len(w) for w in waves])]).astype(np.int64)
    grid = np.column_stack([np.arange(len(waves)), np.zeros(len(waves))])
    data = WaveData(torch.from_numpy(np.concatenate(waves).astype(np.float32)), offsets, grid, manifest, len(waves))
    notes, other = [], pd.Series([h.samplerate for h in headers if h.samplerate != rate], dtype=int)
    if len(other):
        notes.append(f"extra: {len(other)} of {len(files)} file(s) resampled to {rate} Hz ({a['resample_type']}) from "
                     + ", ".join(f"{r} Hz ({n})" for r, n in other.value_counts().items()))
    several = sum(h.channels > 1 for h in headers)
    if several:
        notes.append(f"extra: {several} file(s) of several channels, " + (
            "mixed to mono (their mean)" if a["channel"] is None else f"channel {a['channel']} taken (audio.channel)"))
    return data, list(zip(map(str, files), hashes)), notes


def set_crops(datas: dict[str, SplitInputs], crop_seconds: float | None) -> int | None:
    """Set the crop length of every split: waveforms (and matrix frames) are cut ``crop_seconds``
    long at any offset (``WaveData.clip``); cached spectrogram windows are cut to that many frames
    (returned; ``None``: whole windows). ``None``: the competition's ``audio.clip_seconds``.
    Raises ``ConfigError`` for a crop longer than the cached windows."""
    if crop_seconds is None:
        return None
    frames = None
    for data in datas.values():
        if isinstance(data, WaveData):
            data.clip = max(1, int(round(crop_seconds * data.rate)))
            continue
        frames = max(1, int(round(crop_seconds * data.frames_per_second)))
        if frames > data.spec.shape[-1]:
            raise ConfigError(f"pretrain.crop_seconds {crop_seconds} is longer than the cached windows "
                              f"({data.manifest['clip_seconds']} s, {data.spec.shape[-1]} frames); use at most that, "
                              f"or a waveform feature set")
    return frames


def normalise(model, datas: dict[str, SplitInputs]) -> None:
    """Give ``model`` the input statistics of every split together (:func:`input_stats` over at
    most :data:`STATS_WINDOWS` evenly spaced windows of each, weighted by their number), as the
    fold trainer does: per channel and band ``(C, F)`` inside the front end (waveform input; the
    model's own ``(C,)`` statistics then 0 and 1), else per channel ``(C,)``. Returns ``None``."""
    parts = []
    for data in datas.values():
        items = data.windows_of(np.arange(len(data.count)))[0]
        items = items[::max(1, len(items) // STATS_WINDOWS)]
        mean, std, _, _ = input_stats(data, items, model.frontend)
        parts.append((len(items), mean.double(), std.double()))
    n = sum(k for k, _, _ in parts)
    mean = sum(k * m for k, m, _ in parts) / n
    std = (sum(k * (s ** 2 + m ** 2) for k, m, s in parts) / n - mean ** 2).clamp_min(0).sqrt().float()
    mean = mean.float()
    if model.frontend is not None:
        model.frontend.set_normalisation(mean[:, :, None], std[:, :, None].clamp_min(1e-6))
        mean, std = torch.zeros(len(mean)), torch.ones(len(mean))
    model.set_normalisation(mean, std)


def pretrain_key(cfg: dict, datas: dict[str, SplitInputs], extra_files: list) -> str:
    """Fingerprint of what the checkpoint depends on: the network (features, front end, model
    without its transfer options), the experiment's augmentations (when ``pretrain.experiment_augment``),
    the optimiser, ``train.amp`` and ``grad_clip``, the ``pretrain`` section, every split's
    feature record and the extra files (paths, SHA-256 of their bytes: a file rewritten at the same
    size is noticed); with ``inputs.group_norm``, each split's group of every row (the key of
    before without it)."""
    model = dict(cfg["model"], params={k: v for k, v in cfg["model"]["params"].items() if k not in TRANSFER_PARAMS})
    what = {"features": cfg["features"], "frontend": cfg["frontend"], "model": model, "optimizer": cfg["optimizer"],
            "augment": cfg["augment"] if cfg["pretrain"]["experiment_augment"] else None,
            "amp": cfg["train"]["amp"], "grad_clip": cfg["train"]["grad_clip"], "pretrain": cfg["pretrain"]}
    if (cfg.get("inputs") or {}).get("group_norm"):
        what["group_norm"] = {s: d.row_group.tolist() for s, d in datas.items() if d.row_group is not None}
    return fingerprint(FORMAT_VERSION, what, {s: d.manifest.get("record") for s, d in datas.items()}, extra_files)


def _second_view(data: SplitInputs, items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Another random crop of the region of each item (the second view of the same recording):
    items ``(n, 2)`` (region, start sample) of waveforms, ``(n,)`` window indices of cached
    spectrograms, in and out."""
    if isinstance(data, WaveData):
        regions = items[:, 0]
        room = np.maximum(data.lengths[regions] - data.clip, 0) + 1
        return np.column_stack([regions, (rng.random(len(regions)) * room).astype(np.int64)])
    regions = data.window_region[items]
    return data.region_window0[regions] + (rng.random(len(items)) * data.region_windows[regions]).astype(np.int64)


class PretrainRun:
    """One pretraining run of experiment ``cfg`` in output folder ``out`` (see the module
    docstring): :meth:`run` returns the summary. ``log`` prints a line. Raises ``ConfigError``
    before any work for what :func:`check_pretrain` and :func:`set_crops` refuse,
    ``MissingArtifact`` naming the stage to run first."""

    def __init__(self, cfg: dict, out: Outputs, force: bool = False, log=print):
        self.cfg, self.out, self.force, self.log, self.pc = cfg, out, force, log, cfg["pretrain"]
        self.name = cfg["name"]
        self.splits = check_pretrain(cfg, out)
        self.datas = load_splits(out, cfg, self.splits)
        own = [p for split in ("train", "test") if self.pc["extra_audio"] and (split == "train" or out.has_test())
               for p in out.load_split(split)["path"]]  # (read only when there is extra audio to check)
        extra, self.extra_files, self.notes = extra_inputs(
            self.pc["extra_audio"], next(iter(self.datas.values())).manifest, out.load_competition(), own)
        if extra is not None:
            self.datas["extra"] = extra
        self.crop_frames = set_crops(self.datas, self.pc["crop_seconds"])
        waves = [d for d in self.datas.values() if isinstance(d, WaveData)]
        short = sum(int((d.lengths < d.clip).sum()) for d in waves)
        if short:  # padded views: mostly silence to compare
            clip = out.load_competition()["audio"]["clip_seconds"]
            crop = (f"pretrain.crop_seconds {self.pc['crop_seconds']} s" if self.pc["crop_seconds"] else
                    f"the crop (pretrain.crop_seconds: null, so audio.clip_seconds {clip} s)")
            self.notes.append(f"{crop} is longer than {short} of the {sum(len(d.lengths) for d in waves)} recordings: "
                              f"their views are padded")
        self.key = pretrain_key(cfg, self.datas, self.extra_files)
        self.record = out.pretrained_record(self.name)
        self.path = out.pretrained(self.name)
        self.state_path = self.path.with_name(f"{self.name}.state.pt")
        self.log_path = self.path.with_name(f"{self.name}_log.csv")

    def recordings(self) -> dict[str, int]:
        """The number of recordings of each split read."""
        return {s: len(d.count) for s, d in self.datas.items()}

    def setup(self) -> None:
        """Seeds, the network (the experiment's model without transfer options, no scalar input,
        a 1-output head that is never trained), its input statistics, the learner, optimiser,
        view maker and waveform augmenter, on the device of ``train.device``."""
        cfg, pc = self.cfg, self.pc
        seed_everything(pc["seed"])
        self.device = get_device(cfg["train"]["device"])
        # bfloat16 autocast (train.amp); not float16 on an old GPU, which would need a gradient scaler
        self.amp = cfg["train"]["amp"] and (self.device.type != "cuda" or torch.cuda.is_bf16_supported())
        section = dict(cfg["model"], params={k: v for k, v in cfg["model"]["params"].items() if k not in TRANSFER_PARAMS})
        manifest = next(iter(self.datas.values())).manifest
        self.model = build_model(section, manifest, 1, 0, cfg["frontend"])
        self.compat = describe(self.model, MODELS.get(section["name"]), section, manifest, cfg["frontend"])
        normalise(self.model, self.datas)
        place_model(self.model, self.device)
        self.model.eval()
        with torch.no_grad():  # the embedding's width, from a probe of two inputs
            data = next(iter(self.datas.values()))
            x = data.batch(data.windows_of(np.arange(min(2, len(data.count))))[0][:2], self.device)[0]
            dim = self.model(x)["embedding"].shape[1]
        self.learner = SSLLearner(self.model, dim, pc["method"], pc["projector_hidden"], pc["projector_dim"],
                                  pc["predictor_hidden"], pc["ema"], pc["temperature"]).to(self.device).train()
        self.params = self.learner.trainable()
        opt = cfg["optimizer"]
        self.opt = build_optimizer({"name": opt["name"], "params": dict(opt["params"], lr=pc["lr"])},
                                   [{"params": self.params, "lr_scale": 1.0}])
        aug = cfg["augment"] if pc["experiment_augment"] else {"waveform": [], "spec_augment": None}
        self.views = ViewMaker(pc["mixup"], pc["crop_scale"], aug["spec_augment"], seed=pc["seed"] + 1)
        self.wave_augment = WaveAugmenter(aug["waveform"], seed=pc["seed"] + 2, sample_rate=manifest["sample_rate"])
        self.rng = np.random.default_rng(pc["seed"])
        self.history: list[dict] = []
        self.resumed_after: list[int] = []  # the epochs this result was resumed after (interrupted runs)

    def _spectrogram(self, data: SplitInputs, items: np.ndarray) -> torch.Tensor:
        """The normalised spectrograms ``(B, C, F, T)`` of some items: waveforms augmented (the
        experiment's ``augment.waveform``) and through the model's front end; cached windows
        standardised with the model's statistics and cut to the crop length."""
        x, _ = data.batch(items, self.device)
        with torch.no_grad():
            if x.dim() == 2:
                x, _ = self.wave_augment(x, torch.zeros(len(x), 1, device=x.device))
                return self.model.frontend(x)
            spec = (x - self.model.spec_mean) / self.model.spec_std
            if self.crop_frames and self.crop_frames < spec.shape[-1]:
                start = torch.as_tensor(self.rng.integers(0, spec.shape[-1] - self.crop_frames + 1, len(spec)),
                                        device=spec.device)
                idx = start[:, None] + torch.arange(self.crop_frames, device=spec.device)
                spec = spec.gather(3, idx[:, None, None, :].expand(-1, spec.shape[1], spec.shape[2], -1))
            return spec

    def step(self, data: SplitInputs, it1: np.ndarray, it2: np.ndarray) -> torch.Tensor | None:
        """One optimisation step on two views of a batch of ``B`` recordings of ``data`` (items
        ``(B,)`` window indices or ``(B, 2)`` region and start: the two crops of each recording):
        spectrograms ``(B, C, F, T)``, :class:`ViewMaker`, :func:`post_norm` over both views, the
        learner's loss (autocast per ``train.amp``), gradient clipping at ``train.grad_clip``, the
        optimiser, the target's EMA. Returns the detached scalar loss, or ``None`` when the loss or
        the gradient norm is not finite (the step is then skipped)."""
        s1, s2 = self._spectrogram(data, it1), self._spectrogram(data, it2)
        b = len(s1)
        v = post_norm(torch.cat([self.views(s1), self.views(s2)]))
        v = (v * self.model.spec_std + self.model.spec_mean).contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.amp):
            loss = self.learner(v[:b], v[b:])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg["train"]["grad_clip"])
        if not (torch.isfinite(loss) and torch.isfinite(norm)):
            return None
        self.opt.step()
        self.learner.update_target()
        return loss.detach()

    def epoch(self, epoch: int) -> dict:
        """One pass over a crop of every recording of every split (batches of one split each, in
        random order; a last batch of one recording is left out). Returns the epoch's log row.
        Raises ``TrainingError`` when every step was non-finite or any weight or statistic of the
        learner is non-finite at the end (nothing of the epoch is saved)."""
        t0, bs = time.time(), self.pc["batch_size"]
        batches = []
        for name, data in self.datas.items():
            it1 = data.sample_windows(self.rng.permutation(len(data.count)), self.rng)
            it2 = _second_view(data, it1, self.rng)
            batches += [(name, it1[i:i + bs], it2[i:i + bs]) for i in range(0, len(it1), bs) if len(it1[i:i + bs]) > 1]
        total, seen, skipped = 0.0, 0, 0
        self.learner.train()
        for k in progress(self.rng.permutation(len(batches)), desc=f"pretrain epoch {epoch}/{self.pc['epochs']}",
                      leave=False, unit="batch"):
            name, it1, it2 = batches[k]
            loss = self.step(self.datas[name], it1, it2)
            if loss is None:
                skipped += 1
                continue
            total, seen = total + loss * len(it1), seen + len(it1)
        if not seen:
            raise TrainingError(f"pretraining {self.name}: every step of epoch {epoch} was non-finite; lower pretrain.lr")
        bad = [k for k, v in self.learner.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:  # a diverging step, or a skipped step's forward pass updating BatchNorm statistics
            raise TrainingError(f"pretraining {self.name}: non-finite weights or statistics after epoch {epoch} "
                                f"({len(bad)} tensors, e.g. {', '.join(bad[:3])}); lower pretrain.lr")
        return {"epoch": epoch, "loss": float(total / seen), "recordings": seen, "skipped_steps": skipped,
                "seconds": time.time() - t0}

    def _rngs(self) -> dict:
        return {"run": self.rng.bit_generator.state, "views": self.views.rng.bit_generator.state,
                "wave": self.wave_augment.rng.bit_generator.state, "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}

    def save_state(self) -> None:
        """Write the whole state after a finished epoch, atomically (:func:`atomic_path`)."""
        state = {"key": self.key, "epoch": len(self.history), "history": self.history, "rng": self._rngs(),
                 "resumed_after": self.resumed_after,
                 "learner": self.learner.state_dict(), "optimizer": self.opt.state_dict()}
        with atomic_path(self.state_path) as tmp:
            torch.save(state, tmp)

    def resume(self) -> int:
        """Load the state file when it is this run's (same key): the epoch it ends (0: none)."""
        if not self.state_path.exists():
            return 0
        state = load_tensors_only(self.state_path, TrainingError)  # tensors and plain values only: runs no code
        if state.get("key") != self.key:
            self.log(f"ignoring {self.state_path} (another run's state)")
            return 0
        self.learner.load_state_dict(state["learner"])
        self.opt.load_state_dict(state["optimizer"])
        self.history = state["history"]
        self.resumed_after = [*state.get("resumed_after", []), state["epoch"]]
        r = state["rng"]
        self.rng.bit_generator.state, self.views.rng.bit_generator.state = r["run"], r["views"]
        self.wave_augment.rng.bit_generator.state = r["wave"]
        torch.set_rng_state(r["torch"])
        if r["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(r["cuda"])
        return state["epoch"]

    def write_result(self, seconds: float) -> dict:
        """Write the log (also written after every epoch) and the checkpoint, then the record (last,
        over the checkpoint alone: the two can be copied elsewhere without the log); remove the
        state file."""
        losses = [h["loss"] for h in self.history]
        ckpt = {"format": FORMAT, "state_dict": backbone_state(self.model), "compat": self.compat,
                "method": self.pc["method"], "epochs": len(self.history), "losses": losses,
                "recordings": self.recordings(), "seconds": seconds,
                "config": {k: self.cfg[k] for k in ("features", "frontend", "model", "pretrain")}}
        write_csv(self.log_path, pd.DataFrame(self.history))
        with atomic_path(self.path) as tmp:
            torch.save(ckpt, tmp)
        info = {"method": self.pc["method"], "epochs": len(self.history), "losses": losses, "seconds": seconds,
                "recordings": self.recordings(), "device": str(self.device), "resumed_after": self.resumed_after,
                "audio": {s: d.manifest["splits"][s].get("audio") for s, d in self.datas.items() if s != "extra"}}
        rec = self.record.commit([self.path], self.key,  # what fine-tuning reads: the checkpoint alone
                                 inputs={f"features/{s}": d.manifest.get("record") for s, d in self.datas.items()
                                         if s != "extra"}, info=info)
        self.state_path.unlink(missing_ok=True)
        return rec

    def run(self) -> dict:
        """Pretrain (or find the result up to date: ``skipped``); returns the summary: ``path``,
        ``log``, ``method``, ``epochs``, ``losses``, ``seconds``, ``recordings``, ``skipped``,
        ``resumed_from`` (the epoch this run resumed after, 0 when fresh), ``resumed_after`` (every epoch
        the result was resumed after, over all its interrupted runs), ``device``."""
        summary = {"experiment": self.name, "path": self.path, "log": self.log_path, "method": self.pc["method"]}
        rec, _ = self.record.check(self.key)
        if rec is not None and not self.force:
            return dict(summary, skipped=True, resumed_from=0, **rec["info"])
        self.record.begin(self.path.parent)
        if self.force:
            self.state_path.unlink(missing_ok=True)
        self.setup()
        resumed = self.resume()
        n_net = sum(v.numel() for k, v in self.model.named_parameters() if k in backbone_state(self.model))
        n_ssl = sum(p.numel() for p in self.params) - n_net
        self.log(f"network {self.cfg['model']['name']}: {n_net:,} parameters pretrained (+ {n_ssl:,} "
                 f"in the projector{' and predictor' if self.pc['method'] == 'byol_a' else ''}) on {self.device}")
        if resumed:
            self.log(f"resumed after epoch {resumed} from {self.state_path}")
        else:
            self.log_path.unlink(missing_ok=True)  # an earlier run's losses, never shown beside this run's state
        for epoch in range(resumed + 1, self.pc["epochs"] + 1):
            row = self.epoch(epoch)
            self.history.append(row)
            self.save_state()  # before the line: a run killed after it resumes after this epoch
            write_csv(self.log_path, pd.DataFrame(self.history))  # for reading while it runs
            self.log(f"epoch {epoch:>2}/{self.pc['epochs']}  loss {row['loss']:.4f}  {row['seconds']:.1f}s"
                     + (f"  {row['skipped_steps']} non-finite steps skipped" if row["skipped_steps"] else ""))
        rec = self.write_result(sum(h["seconds"] for h in self.history))
        return dict(summary, skipped=False, resumed_from=resumed, **rec["info"])


def pretrain(cfg: dict, out: Outputs, force: bool = False, log=print) -> dict:
    """Pretrain experiment ``cfg``'s network in ``out`` (:class:`PretrainRun`); returns its summary."""
    return PretrainRun(cfg, out, force, log).run()
