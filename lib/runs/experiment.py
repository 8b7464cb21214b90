"""Stage 02 core: train the folds of an experiment, merge them, and record what was trained how.

Every finished fold is a result of its own (``models/<exp>/fold<k>.pt``, ``fold<k>_oof.npy``,
``fold<k>_log.csv`` under ``fold<k>.record.json``, :mod:`lib.core.artifacts`), so:

* a finished fold is never trained again while its key (the experiment's config without its
  run-only keys, the folds table, the feature set's record, the competition's task and metrics)
  is unchanged, and it survives a failure in a later fold;
* an interrupted fold resumes from its last finished epoch (``fold<k>.state.pt``, written after
  every epoch by :func:`lib.training.loop.train_fold`);
* folds trained in separate runs (``--set train.folds=[k]``, on other days or machines) merge
  into one OOF file and one score table; until every fold is there, the experiment's record
  says ``partial`` and ``04_ensemble.py`` refuses it unless told otherwise.

The experiment's own record (``models/<exp>/record.json``) is removed when a run starts and
written when its folds are merged; like each fold's, it names the fold assignment it was
trained on (:func:`lib.core.artifacts.folds_id` under ``inputs``), which stages 03-05 check
against the current ``folds.csv``; it lists every fold file, ``oof/<exp>.csv``,
``scores.json``, ``log.csv``, ``report/`` (:func:`lib.evaluation.reports.write_report`: curves,
confusion matrix, ROC/PR, calibration, tables), ``config.yaml`` (the fully resolved experiment
config, which ``03_infer.py`` reads) and ``run.json`` (per fold: library versions, the
project's git commit, device, precision, host, command).
"""
from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from sklearn.metrics import confusion_matrix

from ..core.artifacts import AUDIO, FOLDS, MODEL_KEYS, SETTINGS, audio_id, folds_id, model_settings
from ..core.config import ROOT, check_loaded, row_noun, setting_changes, training_settings
from ..core.errors import ConfigError, MissingArtifact, TrainingError
from ..core.paths import Outputs, as_outputs, pretrained_record
from ..core.utils import atomic_path, fingerprint, format_seconds, read_json, write_csv, write_json
from ..data import tasks
from ..data.metadata import metadata_columns
from ..data.slices import with_slice_columns, with_slices
from ..inputs import load_inputs
from ..evaluation.decisions import postprocessed_scores
from ..evaluation.metrics import score_all
from ..inference.infer import load_checkpoints
from ..inference.segments import segment_file, segment_predictions
from ..evaluation.reports import write_report
from ..models import build_model, is_classical
from ..models.pretrained_weights import TRANSFER_PARAMS, pretrained_id
from ..training.classical import train_fold_classical
from ..training.ddp import Ranks, broadcast, gather
from ..training.loop import monitored, train_fold
from .distributed import claim_work, claims_folder, finish, setup
from .self_training import mixed_targets, same_teacher, soft_targets
from ..core.device import training_amp, training_dtype

FORMAT_VERSION = 5  # 5: fold resume states hold the callbacks' states (lib.training.callbacks)


def experiment_key(cfg: dict, folds_df: pd.DataFrame, manifest: dict, comp: dict, teacher: str | None = None,
                   ddp: tuple | None = None, pretrained: str | None = None) -> str:
    """Fingerprint of what an experiment's models depend on: the config (without its name,
    :data:`lib.core.config.RUN_ONLY_KEYS` and ``ADDED_KEYS`` at their neutral values:
    :func:`lib.core.config.training_settings`), the
    folds table (ids, targets, groups, folds, metadata), the feature set's record id, the
    competition's task, classes, metrics, aggregation and metadata, ``pretrained``: what identifies
    the weights in ``model.params.pretrained`` (:func:`lib.models.pretrained_weights.pretrained_id`:
    a ``pretrain.py`` record's id, or the SHA-256 of the file or folder; the caller computes it once,
    since a Hugging Face folder takes seconds to hash), (``train.distill``) the teacher
    blend's record id and (DDP over several ranks: its global batch differs) ``ddp``: ``("ddp",
    ranks, sync_bn)``."""
    what, settings = training_settings(cfg), model_settings(comp)
    return fingerprint(FORMAT_VERSION, what, folds_df.drop(columns=["path"]).values.tolist(), manifest["record"],
                       {k: settings[k] for k in MODEL_KEYS}, settings["aggregate"], *([teacher] if teacher else []),
                       *([list(ddp)] if ddp else []), *([pretrained] if pretrained else []))


def pretrained_on_old_audio(out: Outputs, checkpoint: str, manifest: dict) -> str | None:
    """Why a ``pretrain.py`` ``checkpoint`` of this output folder was pretrained on other
    recordings than the feature set's cache (its ``manifest``, as loaded) holds now (one replaced
    and 01 run again since), in words, else ``None`` (the same audio; a checkpoint of another
    folder, of an older version or of another kind). Still a valid start: said, not refused."""
    p = Path(checkpoint).expanduser()
    if not p.is_file() or p.resolve().parent != (out.root / "pretrained").resolve():
        return None
    used = (((pretrained_record(p).read() or {}).get("info") or {}).get("audio")) or {}
    now = manifest.get("splits") or {}
    changed = [s for s, h in used.items() if h and isinstance(now.get(s), dict) and now[s].get("audio") not in (None, h)]
    return (f"{p.name} was pretrained on other {' and '.join(changed)} recordings than feature set "
            f"{manifest.get('set')!r} holds now (replaced since): run pretrain.py for it again to pretrain on them"
            if changed else None)


def check_buildable(out: Outputs, cfg: dict, where: str) -> list[str]:
    """Build experiment ``cfg``'s network once on its cached feature set's manifest (the pretrained
    weights loaded) and run a batch of two zero inputs through it (``(2, C, F, T)``, or waveforms
    of ``audio.clip_seconds``), and its waveform augmentations at the data's rate, so that what
    only a build or a first batch finds (a ResNet depth, a front end above Nyquist, a missing
    pretrained file, a trunk that pools a short input away) stops stage 01, naming ``where``
    (the config file), before any experiment of a run trains. Reads no data (nor a background
    augmentation's folder); a scikit-learn member is only built. A ``pretrain.py`` checkpoint of
    this output folder that is not there yet (pretrain.py runs after 01) is left to 02. Returns
    warnings (SpecAugment masks as wide as most of the input: :func:`_wide_masks`); raises
    ``ConfigError``."""
    from ..training.wave_augment import WaveAugmenter

    manifest = read_json(out.features(cfg["features"]["set"]) / "manifest.json")
    comp = out.load_competition()
    weights = (cfg["model"].get("params") or {}).get("pretrained")
    later = isinstance(weights, str) and not Path(weights).expanduser().exists() and \
        Path(weights).expanduser().resolve().parent == (out.root / "pretrained").resolve()
    try:
        model = build_model(cfg["model"], manifest, tasks.n_outputs(comp), 0, cfg["frontend"], pretrained=not later)
        if is_classical(cfg["model"]):
            return []
        WaveAugmenter([dict(e, params={k: v for k, v in (e.get("params") or {}).items() if k != "folder"})
                       for e in cfg["augment"]["waveform"]], sample_rate=manifest["sample_rate"])
        shape = ([max(1, int(round(comp["audio"]["clip_seconds"] * manifest["sample_rate"])))]  # (WaveData's)
                 if manifest.get("spec_shape") is None else manifest["spec_shape"])
        with torch.no_grad():
            model.eval()(torch.zeros(2, *shape), torch.zeros(2, 0))
            return [f"{where}: {w}" for w in _wide_masks(cfg["augment"]["spec_augment"],
                                                        model.to_spec(torch.zeros(1, *shape)).shape[-2:])]
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except (TypeError, ValueError, RuntimeError) as exc:  # torch's and the libraries' own: said before any training
        raise ConfigError(f"{where}: model {cfg['model']['name']!r} does not build or run on this feature set's "
                          f"inputs {manifest.get('spec_shape') or 'waveforms'} with its params: {exc}") from None


def _wide_masks(sa: dict, bands_frames) -> list[str]:
    """SpecAugment's masks (``augment.spec_augment``) wider than half the trunk's input of
    ``(bands, frames)``, in words (one a mask could hide most or all of the input; Park et al.
    2019 mask at most 27 of 80 bands), or ``[]``."""
    wide = [f"{key} {sa[key]} against the input's {n} {what}" for key, n, what in
            zip(("freq_mask", "time_mask"), bands_frames, ("frequency bands", "frames")) if sa["p"] and sa[key] > n / 2]
    return [f"augment.spec_augment: {'; '.join(wide)}: a mask (drawn up to that width) can hide most or all of it; "
            f"a tenth or so is usual"] if wide else []


def environment(device: torch.device, amp: bool, ranks: Ranks = Ranks(), ddp: bool = False) -> dict:
    """Where and how a fold was trained: library versions, the project's git commit (with
    ``+dirty`` when files differ from it; ``None`` outside a git checkout), device, precision,
    host, command line and, under torchrun, the rank that trained it (``ddp``: all of them)."""
    import librosa
    import sklearn

    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        commit = commit and commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        commit = None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    dtype = training_dtype(device, amp)
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "sklearn": sklearn.__version__, "librosa": librosa.__version__, "pandas": pd.__version__,
            "git_commit": commit, "device": f"{device.type}: {name}",
            "precision": f"{dtype} autocast (training)" if dtype != "float32" else "float32",
            "threads": torch.get_num_threads(),
            "host": platform.node(),
            "command": " ".join(sys.argv),
            **({"ranks": f"all {ranks.world} (DDP)" if ddp else f"rank {ranks.rank} of {ranks.world}"}
               if ranks.world > 1 else {})}


def _fold_files(out: Outputs, exp: str, fold: int) -> dict:
    d = out.model_dir(exp)
    return {"model": d / f"fold{fold}.pt", "oof": d / f"fold{fold}_oof.npy", "log": d / f"fold{fold}_log.csv",
            "state": d / f"fold{fold}.state.pt"}


class ExperimentRun:
    """One experiment's part in a training run: its data, key and folds, and the steps of
    :func:`train_experiments` (announce, begin, the folds to train, train one, merge).

    ``cfg``: the experiment config; ``device``: this rank's device; ``ranks`` (DDP experiments
    put the number of ranks in their key). Loads stage 00's folds and stage 01's inputs
    (memory-mapped on the CPU; copied to a GPU only while this rank trains one of its folds) and
    decides ``skipped`` (every fold asked for is finished with this key and ``force`` is off).
    Raises ``MissingArtifact`` naming the stage to run, ``ConfigError`` for a bad option.
    """

    def __init__(self, cfg: dict, out: Outputs, device, ranks: Ranks = Ranks(), force: bool = False, log=print):
        self.cfg, self.out, self.device, self.ranks, self.force, self.log = cfg, out, device, ranks, force, log
        self.comp = out.load_competition()
        self.table = out.load_split("train")
        self.name = cfg["name"]
        self.ddp = cfg["train"]["distributed"] == "ddp" and ranks.world > 1
        if self.ddp and is_classical(cfg["model"]):
            raise ConfigError(f"{self.name}: train.distributed ddp needs a network; scikit-learn members train "
                              f"on one process (use train.distributed: folds)")
        # (a scikit-learn member's own file and a --set cannot give it train.sampler, supcon or distill
        # (NOT_FOR_CLASSICAL); a network's config it builds on may, and they are not applied, as its epochs)
        twice = (None if is_classical(cfg["model"])
                 else "train.sampler balanced_slices and decision.slice_prior both undo the slices' class ratios"
                 if cfg["train"]["sampler"] == "balanced_slices" and (self.comp.get("decision") or {}).get("slice_prior")
                 else "train.sampler balanced and train.class_weights balanced both undo the class ratio"
                 if cfg["train"]["sampler"] == "balanced" and cfg["train"]["class_weights"] == "balanced" else None)
        if twice and not ranks.rank:
            log(f"WARNING: {self.name}: {twice}: together they over-correct; keep one")
        self.data, self.teacher = self._load(torch.device("cpu"))
        self._device_data = None
        self.ddp_key = ddp_key = (cfg["train"]["distributed"], ranks.world, cfg["train"]["sync_bn"]) if self.ddp else None
        self.pretrained = pretrained_id(cfg["model"])  # other weights at the same path: trained again
        self.key = experiment_key(cfg, self.table, self.data.manifest, self.comp, self.teacher, ddp_key, self.pretrained)
        self.folds_id = folds_id(self.table)
        self.all_folds = sorted(int(k) for k in self.table["fold"].unique() if int(k) >= 0)  # -1: pseudo-labelled
        self.wanted = self.all_folds if cfg["train"]["folds"] is None else [int(k) for k in cfg["train"]["folds"]]
        old, _ = out.trained(self.name).check(self.key)
        self.skipped = (old is not None and not force and set(self.wanted) <= set(old["info"]["folds"])
                        and old["inputs"].get(FOLDS) == self.folds_id)  # else merged again: older records lack it
        weights = cfg["model"]["params"].get("pretrained")
        if self.skipped and not ranks.rank and weights and (  # (a new test set since pretrain.py ran)
                why := pretrained_on_old_audio(out, weights, self.data.manifest)):
            log(f"WARNING: {self.name}: {why} (the models, up to date, were trained from it as it is)")
        if not self.skipped and set(cfg["model"]["params"]) & set(TRANSFER_PARAMS) and not is_classical(cfg["model"]):
            # a pretrained checkpoint and the transfer options checked before any record or model of this name goes
            build_model(cfg["model"], self.data.manifest, tasks.n_outputs(self.comp), 0, cfg["frontend"])
        trained_cfg = out.model_dir(self.name) / "config.yaml"
        changes = setting_changes(yaml.safe_load(trained_cfg.read_text()), cfg) if trained_cfg.is_file() else []
        if changes and not ranks.rank:  # never unsaid: the models of another config under this name go
            log(f"{self.name}: its models were trained with other settings ({'; '.join(changes[:6])}"
                f"{' ...' if len(changes) > 6 else ''}): they are replaced")
        elif not changes and not self.skipped and not ranks.rank and (earlier := out.trained(self.name).read()):
            now = {"features": self.data.manifest["record"], FOLDS: self.folds_id,
                   "pretrained": self.pretrained, "teacher": self.teacher, "ddp": self.ddp_key and list(self.ddp_key)}
            moved = [k for k, v in now.items() if k in earlier.get("inputs", {}) and earlier["inputs"][k] != v]
            if moved:  # the same settings, other inputs (a checkpoint pretrained again, a new blend to distil, ...)
                names = {"features": "the feature set", FOLDS: "the folds", "pretrained": "the pretrained weights",
                         "teacher": "the teacher blend", "ddp": _ddp_words(earlier["inputs"].get("ddp"), self.ddp_key)}
                log(f"{self.name}: {', '.join(names[k] for k in moved)} changed since its models were trained: "
                    f"they are trained again")
        self.status: dict[int, str] = {}

    def _load(self, device):
        """The training inputs on ``device`` (with ``train.distill``'s mixed targets) and the
        teacher's id (:func:`lib.runs.self_training.teacher_id`; an earlier version's student keeps the
        blend record's id it was trained with while that blend is current; ``None`` without distillation)."""
        data = load_inputs(self.out, self.cfg, "train", self.table, self.comp, device)
        if not self.cfg["train"]["distill"] or is_classical(self.cfg["model"]):  # (a member learns hard labels)
            return data, None  # else labels mixed with the current blend's OOF probabilities
        soft, teacher = soft_targets(self.out, self.comp, self.table, self.name)
        earlier = ((self.out.trained(self.name).read() or {}).get("inputs") or {}).get("teacher")
        if earlier != teacher and same_teacher(self.out.ensembled.read(), earlier):  # an earlier version's key,
            teacher = earlier  # the same OOF blend: the student stays
        data.train_target = mixed_targets(data.target, soft, self.cfg["train"]["distill"]["weight"])
        return data, teacher

    def announce(self, folds: list[int]) -> None:
        """Log what is trained how: model, inputs, recordings, ``folds`` of all, device(s)."""
        cfg, data, comp = self.cfg, self.data, self.comp
        meta_cols = sum(metadata_columns(comp), []) if cfg["inputs"]["metadata"] else []
        fe, sr = cfg.get("frontend"), data.manifest.get("sample_rate")
        inputs = (f"waveform {sr} Hz through front end {fe['name']} {fe['params']}" if fe
                  else f"waveform {sr} Hz (the model's own input layers)" if data.manifest.get("kind") == "waveform"
                  else f"features {cfg['features']['set']} {data.manifest['spec_shape']} + {data.n_scalars} audio scalars")
        where = f"device {self.device}" if self.ranks.world == 1 else (
            f"{self.ranks.world} ranks, " + ("DistributedDataParallel" if self.ddp else "folds shared out"))
        self.log(f"experiment {self.name}: model {cfg['model']['name']}, {inputs}"
                 f"{' + metadata ' + str(meta_cols) if meta_cols else ''}; {len(self.table)} {row_noun(comp)}s in "
                 f"{len(data.rec)} windows; folds {folds} of {len(self.all_folds)}, {where}")
        if not is_classical(cfg["model"]):  # (the star was never explained, and does not follow the raw figures: probe)
            k, metric = cfg["train"]["smooth_epochs"], cfg["train"]["monitor"] or comp["metric"]
            self.log(f"each epoch line: that epoch's validation scores; * the epoch kept so far, the best "
                     + (f"{k}-epoch trailing mean of {metric}" if k > 1 else metric) + ", ties by valid_loss")
        pseudo = int((self.table["fold"] == -1).sum())
        if pseudo:  # pseudo_label.py's rows: in every fold's training, never validated (nor distilled)
            self.log(f"{pseudo} pseudo-labelled {row_noun(comp)}s (fold -1) train in every fold, never validated"
                     + ("; they keep their pseudo labels as targets" if self.teacher else ""))
        if self.teacher:
            self.log(f"distils the blend of 04_ensemble.py (its record {self.teacher}): targets are "
                     f"{cfg['train']['distill']['weight']} x its OOF probabilities + the rest x the labels")
        sc = cfg["train"]["supcon"]
        if sc and not is_classical(cfg["model"]):
            self.log(f"auxiliary supervised contrastive loss (train.supcon: weight {sc['weight']}, temperature "
                     f"{sc['temperature']}): train_loss includes it, valid_loss does not"
                     + (f"; with batches of {cfg['train']['batch_size']} a class has few positives in a batch "
                        f"(32 or more is usual)" if cfg["train"]["batch_size"] < 32 else ""))
        params = cfg["model"]["params"]
        if params.get("pretrained"):
            opts = [f"{k} {params[k]}" for k in ("freeze_blocks", "backbone_lr", "layer_decay") if k in params]
            self.log(f"starts from pretrained weights {params['pretrained']}"
                     + (f" ({', '.join(opts)})" if opts else ""))
            if why := pretrained_on_old_audio(self.out, params["pretrained"], self.data.manifest):
                self.log(f"WARNING: {why}")

    def begin(self) -> None:
        """Remove the experiment's record: its merged results are rebuilt at the end of the run."""
        self.out.trained(self.name).begin(self.out.model_dir(self.name), self.out.oof(self.name).parent)

    def todo(self, on_fold=None) -> list[int]:
        """The folds of this run that need training; the others are marked ``finished earlier``
        (``on_fold(fold, info)`` is called for them) and their leftover resume states removed.
        With ``force`` every wanted fold's record and resume state are removed first."""
        folds = []
        for fold in self.wanted:
            frec = self.out.fold_record(self.name, fold)
            if self.force:  # the fold records go now: a killed --force run, resumed, keeps none from before it (probe)
                frec.begin()
                _fold_files(self.out, self.name, fold)["state"].unlink(missing_ok=True)
            elif (done := frec.check(fingerprint(self.key, fold))[0]) is not None:
                self.status[fold] = "finished earlier"
                self.log(f"fold {fold}: finished earlier with the same settings, kept ({frec.path.name})")
                _fold_files(self.out, self.name, fold)["state"].unlink(missing_ok=True)  # a killed --force run's
                if on_fold:
                    on_fold(fold, done["info"])
                continue
            folds.append(fold)
        return folds

    def train(self, fold: int) -> dict:
        """Train ``fold`` (on every rank together when DDP) and, on the writing rank, save its
        model, OOF probabilities and log under its fold record. Returns the fold's info (scores
        under the metric names, best epoch, seconds, ...)."""
        cfg, out, name, device = self.cfg, self.out, self.name, self.device
        writes = self.ranks.main or not self.ddp
        log = self.log if writes else (lambda *_: None)
        if device.type == "cuda" and self._device_data is None:
            self._device_data = self._load(device)[0]
        data = self._device_data or self.data
        fkey, files, frec = fingerprint(self.key, fold), _fold_files(out, name, fold), out.fold_record(name, fold)
        if is_classical(cfg["model"]):
            fit, extra = train_fold_classical, {}
        else:
            fit = train_fold
            extra = {"ranks": self.ranks if self.ddp else Ranks(),
                     "tensorboard_dir": out.model_dir(name) / "tensorboard" / f"fold{fold}" if writes else None}
        ckpt, info, probs, hist = fit(cfg, self.comp, data, self.table, fold, device, log, state_path=files["state"],
                                      state_key=fkey, **extra)
        resumed = info.get("resumed_from_epoch", 0)
        self.status[fold] = f"resumed from epoch {resumed}" if resumed else "trained"
        if not writes:
            return info
        frec.begin()  # only now (without --force): a fold interrupted while training leaves the previous one whole
        ckpt.update(model=cfg["model"], frontend=cfg.get("frontend"), features=cfg["features"], inputs=cfg["inputs"],
                    manifest=data.manifest,
                    comp={k: self.comp[k] for k in ("task", "classes", "positive", "fine_classes") if k in self.comp}, **info)
        with atomic_path(files["model"]) as tmp:
            torch.save(ckpt, tmp)
        with atomic_path(files["oof"]) as tmp:
            np.save(tmp, probs)
        write_csv(files["log"], pd.DataFrame(hist))
        amp = training_amp(device, cfg["train"]["amp"], cfg["train"]["compile"])
        env = environment(device, amp, self.ranks, self.ddp)
        info = dict(info, n_parameters=ckpt["n_parameters"], environment=env)
        frec.commit([files["model"], files["oof"], files["log"]], fkey,
                    inputs={"features": self.data.manifest["record"], FOLDS: self.folds_id}, info=info)
        files["state"].unlink(missing_ok=True)
        shown = monitored(self.comp, cfg["train"]["monitor"])["metrics"]  # train.monitor's too: the epoch's choice
        kept = "the SWA average" if (info.get("swa") or {}).get("kept") else f"best epoch {info['best_epoch']}"
        log(f"fold {fold}: {kept}  " + "  ".join(
            f"{m} {info[m]:.4f}" for m in shown if m in info) + f"  ({format_seconds(info['seconds'])})"
            + (f", resumed from epoch {resumed}" if resumed else ""))
        return info

    def release(self) -> None:
        """Free this rank's copy of the inputs on its GPU (after its last fold of the experiment)."""
        self._device_data = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def merge(self) -> dict:
        """:func:`merge_folds` of this experiment (rank 0)."""
        where = str(self.device) if self.ranks.world == 1 else (
            f"{self.ranks.world} ranks ({'DDP' if self.ddp else 'folds shared out'}), e.g. {self.device}")
        return merge_folds(self.cfg, self.out, self.comp, self.table, self.key, self.data, self.all_folds, where,
                           self.log, {"pretrained": self.pretrained, "teacher": self.teacher,
                                      "ddp": self.ddp_key and list(self.ddp_key)})


def _ddp_words(before, now) -> str:
    """How the DDP setting of a training run changed, in words (``before``/``now``: ``[mode,
    ranks, sync_bn]`` of a DDP run over several ranks, else ``None``): a DDP model's global batch
    is its ranks' batches together, so a run of another kind trains other models."""
    def kind(ddp):
        return f"DDP over {ddp[1]} ranks{' with sync_bn' if ddp[2] else ''}" if ddp else "one model per fold on one process"
    return f"the training mode ({kind(before)} -> {kind(now)})"


def _check_same_runs(runs: list[ExperimentRun], ranks: Ranks) -> None:
    """Raise ``ConfigError`` on every rank when the ranks of a launch were given other experiments,
    in another order, other settings (their training keys differ) or other ``train.folds``: the
    folds are dealt by position from rank 0's plan, so each rank would train and report other
    experiments' folds, or some folds twice and others never. Nothing is removed or trained before."""
    every = gather([(run.name, run.key, run.wanted) for run in runs], ranks)
    other = [r for r, got in enumerate(every) if got != every[0]]
    if not other:
        return
    names = {r: [name for name, _, _ in every[r]] for r in (0, *other)}
    if any(v != names[0] for v in names.values()):
        what = "other experiments or another order: " + "; ".join(f"rank {r}: {v}" for r, v in names.items())
    elif any([k for _, k, _ in every[r]] != [k for _, k, _ in every[0]] for r in other):
        what = ("other settings (--set values, config files, pretrained weights, a teacher blend or the project "
                "version)")
    else:
        what = "other train.folds: " + "; ".join(f"rank {r}: {[w for _, _, w in every[r]]}" for r in (0, *other))
    raise ConfigError(f"the ranks of this launch were given {what}: run the same 02_train.py line, from the same "
                      f"project version, on every machine (rank(s) {other} differ from rank 0; the folds are shared "
                      f"out among the ranks by themselves)")


def _share_plan(runs: list[ExperimentRun], ranks: Ranks, on_fold) -> None:
    """Rank 0 decides what each run trains (:meth:`ExperimentRun.todo`, calling ``on_fold`` for
    the folds finished earlier), announces the runs and removes their records; every rank then
    sets each run's ``skipped``, ``folds`` and ``status`` from rank 0's plan (the others may look
    while rank 0 removes records)."""
    plan = None
    if ranks.main:
        plan = []
        for run in runs:
            folds = [] if run.skipped else run.todo(on_fold)
            if not run.skipped:
                run.announce(run.wanted)
                run.begin()
            plan.append((run.skipped, folds, dict(run.status)))
    for run, (skipped, folds, status) in zip(runs, broadcast(plan, ranks)):
        run.skipped, run.folds, run.status = skipped, folds, status


def _train_folds(runs: list[ExperimentRun], mine, ranks: Ranks, on_fold) -> list[tuple[int, int]]:
    """Train this rank's folds ``mine`` (an iterable of ``(run index, fold)`` pairs, taken as the
    rank becomes free: :func:`lib.runs.distributed.claim_work`) of the runs that deal their folds
    out, one after the other, then every fold of the ``ddp`` runs on all ranks together;
    ``on_fold(fold, info)`` after each (for ``ddp`` runs on rank 0 only). Returns the pairs this
    rank trained. Every run's inputs are released from the GPU at the end, also when a fold or
    ``on_fold`` raises."""
    done = []
    try:
        for i, fold in mine:  # this rank's folds, one after the other
            if done and done[-1][0] != i:
                runs[done[-1][0]].release()
            info = runs[i].train(fold)
            done.append((i, fold))
            if on_fold:
                on_fold(fold, info)
        for run in runs:  # all ranks together, one fold at a time
            if run.ddp:
                for fold in run.folds:
                    info = run.train(fold)
                    if on_fold and ranks.main:
                        on_fold(fold, info)
                run.release()
    finally:  # also when on_fold stops the run (a pruned sweep trial): no inputs left on a GPU
        for run in runs:
            run.release()
    return done


def _merge_runs(runs: list[ExperimentRun], trained_by: list, out: Outputs, t0: float) -> list[dict]:
    """Rank 0: mark the folds other ranks trained (``trained_by``: per rank, its ``(run index,
    fold)`` pairs) and merge each run's finished folds (:meth:`ExperimentRun.merge`). Returns per
    run its scores dict with ``skipped``, ``status`` and ``run_seconds`` (since ``t0``, in
    seconds); a skipped run's is its ``scores.json`` as written before."""
    for rank, pairs in enumerate(trained_by):
        for i, f in pairs:
            runs[i].status.setdefault(f, f"trained by rank {rank}")
    results = []
    for run in runs:
        if run.skipped:
            results.append(dict(read_json(out.model_dir(run.name) / "scores.json"), skipped=True))
            continue
        scores = run.merge()
        scores["status"] = {int(k): v for k, v in sorted(run.status.items())}
        scores["run_seconds"] = time.time() - t0
        results.append(dict(scores, skipped=False))
    return results


def train_experiments(cfgs: list[dict], out: Outputs, force: bool = False, log=print, on_fold=None) -> list[dict]:
    """Train the folds of the experiments ``cfgs`` that are not finished yet, then merge every
    finished fold of each into its OOF predictions, scores, log and report; on one process, or on
    every rank of a ``torchrun`` launch (:mod:`lib.runs.distributed`).

    ``cfg['train']['folds']`` (``None``: all) chooses the folds of this run; ``force`` retrains
    them even when finished. Writes ``models/<exp>/...`` and ``oof/<exp>.csv`` (id, fold, target,
    ``p_<class>`` ...; the rows of the finished folds). With several ranks, the folds of the
    ``train.distributed: folds`` experiments (all of them, in turn) are dealt out to the ranks,
    one to each rank first, then a free rank taking the next unclaimed one (:func:`lib.runs.distributed.claim_work`),
    then each ``ddp`` experiment trains its folds on all ranks together; rank 0 decides what is
    finished, writes the experiments' records and merges (the ranks wait for each other first).
    ``log``: this rank's messages (the caller silences or labels the other ranks').

    Returns, per experiment, the scores dict with ``"skipped"`` (nothing to do), ``"partial"``
    (some folds missing), ``"missing_folds"`` and per fold ``"status"`` (``trained``,
    ``resumed from epoch k``, ``finished earlier``, ``trained by rank r``); on ranks other than
    0 only ``{"experiment", "skipped", "status"}`` (rank 0's ``finished earlier`` and what this
    rank trained).
    ``on_fold(fold, info)`` (optional) is called after each fold finishes on the rank that
    trained it (``info`` holds its scores under the competition's metric names, its best epoch
    and seconds; on rank 0 also for folds finished earlier); an exception raised there stops the
    run before the merge (finished folds are kept: a sweep prunes a trial so).
    Raises ``MissingArtifact`` naming the stage to run when stage 00 or 01 outputs are missing or
    stale, ``ConfigError`` for a bad option, ``TrainingError`` when a fold cannot be trained
    (finished folds are kept).
    """
    out = as_outputs(out)
    for c in cfgs:
        check_loaded(c, "train_experiment's cfg", "lib.components.load_experiment")
    names = [c["name"] for c in cfgs]
    if not cfgs:
        return []
    if len(set(names)) < len(names):
        raise ConfigError(f"one training run cannot train an experiment twice: {names}")
    with _training_locks(out, names, log):
        return _train_runs(cfgs, out, force, log, on_fold)


_HELD: set[str] = set()
"""The experiments this process holds the training lock of (:func:`_training_locks`)."""


@contextlib.contextmanager
def _training_locks(out: Outputs, names: list[str], log=print):
    """Hold an exclusive lock (``fcntl.flock``, freed when the process ends, killed or not) on each
    experiment of ``names`` in ``out`` (``models/.<exp>.lock``, holding the process id) while it
    trains, on one process: two processes trained one experiment at once, the second resuming
    from the first's epochs; now the second waits for the first, saying so, then finds its folds
    finished. A torchrun launch's ranks share the folds through their claims instead
    (:mod:`lib.runs.distributed`: no lock); a file system without locks (an NFS mount with
    ``nolock``) is said and trains unlocked."""
    import fcntl

    with contextlib.ExitStack() as stack:
        if int(os.environ.get("WORLD_SIZE", 1)) == 1:
            (out.root / "models").mkdir(parents=True, exist_ok=True)
            for name in sorted(names):  # one order for every process: 02 a b beside 02 b a cannot deadlock
                key = str((out.root / "models" / name).resolve()).casefold()  # (one file on a case-blind disk)
                if key in _HELD:  # this process trains it already (a hook training it again): waiting would hang
                    raise ConfigError(f"{name}: this process is training it into {out.root} already")
                _HELD.add(key)
                stack.callback(_HELD.discard, key)
                f = stack.enter_context(open(out.root / "models" / f".{name}.lock", "a+"))
                try:
                    try:
                        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        f.seek(0)
                        log(f"{name}: waiting for another process ({f.read().strip() or '?'}), which trains it into "
                            f"{out.root} now (Ctrl-C stops waiting)")
                        fcntl.flock(f, fcntl.LOCK_EX)
                except OSError as exc:  # (ENOLCK, ENOSYS, EOPNOTSUPP: no locks here)
                    log(f"WARNING: {name}: this file system takes no locks ({exc.strerror}): another process "
                        f"training it into {out.root} at the same time would not be noticed")
                    continue
                f.seek(0)
                f.truncate()
                f.write(f"process {os.getpid()} on {platform.node()}")
                f.flush()
        yield


def _train_runs(cfgs: list[dict], out: Outputs, force: bool, log, on_fold) -> list[dict]:
    """:func:`train_experiments`' work, under its locks."""
    runs = []
    for cfg in cfgs:
        ranks, device = setup(cfg["train"]["device"])
        runs.append(ExperimentRun(cfg, out, device, ranks, force, log))
    t0 = time.time()
    _check_same_runs(runs, ranks)
    _share_plan(runs, ranks, on_fold)
    shared = [(i, f) for i, run in enumerate(runs) if not run.ddp for f in run.folds]
    claims = claims_folder(out.root, ranks)
    mine = _train_folds(runs, claim_work(shared, claims, ranks.rank, ranks.world), ranks, on_fold)
    try:
        trained_by = gather(mine, ranks)  # also: every rank waits here until all have finished
    except RuntimeError as exc:  # torch.distributed's error when a rank on another machine is gone
        raise TrainingError(f"rank {ranks.rank}: another rank of this launch left before the end ({str(exc).splitlines()[0][:200]}): "
                            f"the folds finished are kept; run the same line on every machine again to train the "
                            f"rest and merge") from None
    if claims is not None and ranks.main:
        shutil.rmtree(claims, ignore_errors=True)  # this launch's only: others may share the output folder
        with contextlib.suppress(OSError):
            claims.parent.rmdir()  # .claims/ itself when no other launch's folder is left
    if not ranks.main:
        finish(ranks)
        return [{"experiment": r.name, "skipped": r.skipped, "status": r.status} for r in runs]
    results = _merge_runs(runs, trained_by, out, t0)
    finish(ranks)
    return results


def train_experiment(cfg: dict, out: Outputs, force: bool = False, log=print, on_fold=None) -> dict:
    """:func:`train_experiments` of one experiment: its scores dict (see there)."""
    return train_experiments([cfg], out, force, log, on_fold)[0]


def merge_folds(cfg: dict, out: Outputs, comp: dict, folds_df: pd.DataFrame, key: str, data, all_folds: list[int],
                device, log=print, inputs: dict | None = None) -> dict:
    """Merge every finished fold of ``cfg``'s experiment (those whose record holds ``key``) into
    ``oof/<exp>.csv``, ``scores.json``, ``log.csv``, ``report/`` (:func:`write_report`),
    ``config.yaml`` and ``run.json`` (and, for recordings made of segments, the fold models'
    per-segment OOF predictions ``oof/<exp>.segments.csv``:
    :func:`lib.inference.segments.segment_predictions` over ``data``, the training split's
    inputs), then write the experiment's record (``partial`` while folds are missing; its
    ``inputs`` name the feature set's record, the fold assignment of ``folds_df``,
    :func:`lib.core.artifacts.folds_id`, and the audio settings, :func:`lib.core.artifacts.audio_id`,
    plus ``inputs``: the pretrained weights' and teacher blend's ids, what 02 names when they change).
    ``device``: where it was trained, in words. Returns the scores dict (``report``: the report's ``report.md`` relative to
    ``models/<exp>/``, ``None`` when it failed; then ``report_error`` says why, and ``log``
    warns: a failing report never costs the merged folds). Raises ``MissingArtifact`` when no
    fold is finished."""
    name = cfg["name"]
    model_dir = out.model_dir(name)
    done = {f: r for f in all_folds if (r := out.fold_record(name, f).check(fingerprint(key, f))[0]) is not None}
    if not done:
        raise MissingArtifact(f"{model_dir}: no fold of {name!r} is finished: run 02_train.py for {name}")
    folds = folds_df["fold"].to_numpy()
    oof = np.full((len(folds_df), len(comp["classes"])), np.nan)
    history = []
    for f in done:
        oof[folds == f] = np.load(_fold_files(out, name, f)["oof"])
        history.append(pd.read_csv(_fold_files(out, name, f)["log"]))
    rows = np.isin(folds, list(done))
    oof_df = pd.DataFrame({"id": folds_df["id"], "fold": folds, "target": folds_df["target"]})
    oof_df[tasks.prob_columns(comp)] = oof
    oof_df = oof_df[rows].reset_index(drop=True)
    y = with_slices(tasks.class_index(oof_df["target"], comp), folds_df[rows].reset_index(drop=True))
    probs = oof_df[tasks.prob_columns(comp)].to_numpy()
    infos = [{k: v for k, v in r["info"].items() if k != "environment"} for r in done.values()]
    per_fold = pd.DataFrame(infos)
    missing = [f for f in all_folds if f not in done]
    confusion = None if comp["task"] == "multilabel" else {
        "classes": comp["classes"],
        "rows_true_cols_pred": confusion_matrix(y, probs.argmax(1), labels=range(len(comp["classes"]))).tolist()}
    scores = {
        "experiment": name, "metric": comp["metric"], "oof": score_all(comp["metrics"], y, probs, comp),
        "fold_mean": per_fold[comp["metrics"]].mean().to_dict(), "fold_std": per_fold[comp["metrics"]].std().to_dict(),
        "folds": infos, "partial": bool(missing), "missing_folds": missing, "confusion": confusion,
        "n_parameters": infos[0]["n_parameters"], "device": str(device),
        "seconds": float(per_fold["seconds"].sum()), "key": key, "config": cfg,
    }
    try:  # as 04 and the leaderboard score the OOF rows (masks, slice prior, group aggregation), for the report
        scores["postprocessed"] = (postprocessed_scores(oof_df, folds_df, comp) or {}).get("oof")
    except Exception as exc:  # noqa: BLE001  (never fatal after the folds trained; 02's summary computes it again)
        scores["postprocessed"] = None
        log(f"WARNING: {name}: the OOF scores after the competition's decision post-processing: {exc}")
    history = pd.concat(history, ignore_index=True)
    paths = {"oof": out.oof(name), "scores": model_dir / "scores.json", "log": model_dir / "log.csv",
             "config": model_dir / "config.yaml", "run": model_dir / "run.json"}
    write_csv(paths["log"], history)
    write_csv(paths["oof"], oof_df)
    if segment_file(paths["oof"], comp):
        paths["segments"] = segment_file(paths["oof"], comp)
        models = load_checkpoints(model_dir, sorted(done), data.device)
        write_csv(paths["segments"], segment_predictions(models, data, folds_df, comp, cfg.get("tta"), folds)[0])
    (model_dir / "curves.png").unlink(missing_ok=True)  # older versions' plot; now report/curves.png
    try:  # written whole or removed (write_report); a plotting failure must not cost the merged folds
        report = write_report(model_dir / "report", name, comp, with_slice_columns(oof_df, folds_df), history, scores)
        scores["report"] = str(report[0].relative_to(model_dir))
    except Exception as exc:
        report, scores["report"], scores["report_error"] = [], None, repr(exc)
        log(f"WARNING: {name}: the report could not be written ({exc!r}); folds, OOF file and scores are kept")
    with atomic_path(paths["config"]) as tmp:
        tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    write_json(paths["run"], {f"fold{f}": r["info"].get("environment") for f, r in done.items()})
    write_json(paths["scores"], scores)
    members = [p for p in paths.values() if p.exists()] + report
    for f in done:
        fold_files = _fold_files(out, name, f)
        members += [fold_files["model"], fold_files["oof"], fold_files["log"], out.fold_record(name, f).path]
    out.trained(name).commit(members, key, inputs={"features": data.manifest["record"], FOLDS: folds_id(folds_df),
                                                   "recordings": data.manifest["splits"]["train"].get("audio"), AUDIO:
                                                   audio_id(comp), SETTINGS: model_settings(comp),  # what 03-05 and
                                                   **(inputs or {})},  # the leaderboard check (trained_problem)
                             info={"folds": sorted(done), "partial": bool(missing), "missing_folds": missing})
    return scores
