"""Hyper-parameter sweeps on Optuna (``sweep.py``): one experiment per trial, one study shared by
any number of workers through a database (SQLite file or any SQLAlchemy URL).

A sweep file names an experiment config, a search space over its dotted keys (the keys ``--set``
takes) and a few options; :func:`load_sweep` checks it whole before any work. Each trial samples
values, trains the experiment with them as ``--set`` overrides under a name made of them
(:func:`trial_name`, e.g. ``cnn_small@lr=0.0012,mixup.p=0.4``) through
:func:`lib.runs.experiment.train_experiment`, reports the running mean of its finished folds'
scores, and is stopped by Optuna's ``MedianPruner`` (Akiba et al. 2019, "Optuna: A
Next-generation Hyperparameter Optimization Framework") when the best of its running means is
worse than the median of the finished trials' means at the same fold. Its value is the experiment's OOF score of the competition
metric as 04 scores it (after the competition's ``decision`` post-processing and at a fixed
``decision.threshold``: :func:`lib.evaluation.decisions.postprocessed_scores`); the folds' running
means are the models' own scores (p > 0.5). :func:`summarize` writes ``trials.csv`` and ``best.txt`` (names for ``04_ensemble.py``).
"""
from __future__ import annotations

import hashlib
import json
import random
import re
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
import sqlalchemy.engine
import sqlalchemy.exc
from optuna.storages import JournalStorage
from optuna.storages._heartbeat import get_heartbeat_thread, is_heartbeat_enabled  # optimize's own, for ask/tell
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from ..core.config import ROOT, RUN_ONLY_KEYS, parse_yaml, variant_name
from ..components import load_experiment
from ..core.errors import ConfigError, PipelineError
from ..core.paths import Outputs
from ..core.registry import did_you_mean
from ..core.schema import NOT_FOR_CLASSICAL, under
from ..core.utils import atomic_path, format_seconds, write_csv
from ..evaluation.metrics import get_metric
from ..models import is_classical

KEYS = {"experiment": "path", "space": "mapping", "trials": 20, "sets": [], "pruner": "median", "startup_trials": 5,
        "seed": None}
"""A sweep file's keys and defaults (``experiment`` and ``space`` are required)."""
RANGE, CHOICES = ("low", "high", "log", "step"), ("choices",)
_SAFE = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass
class Sweep:
    """A checked sweep file: ``space`` maps each dotted experiment key to an Optuna distribution;
    ``decode`` maps a key's encoded choices (lists, mappings: JSON text for Optuna) back to values;
    ``stem`` is the base of the trials' names (the experiment's name, a ``+<hash>`` variant of it
    when ``sets`` change what is trained)."""
    path: Path
    experiment: Path
    space: dict
    decode: dict
    trials: int
    sets: list
    pruner: str
    startup_trials: int
    seed: int | None
    stem: str


def _distribution(key: str, spec, where: str):
    """The Optuna distribution of one ``space`` entry and its ``{encoded choice: value}``."""
    at = f"{where} [space.{key}]"
    if not isinstance(spec, dict) or not spec:
        raise ConfigError(f"{at}: a distribution is {{low, high[, log, step]}} or {{choices: [...]}}, got {spec!r}")
    allowed = CHOICES if "choices" in spec else RANGE
    mixed = [k for k in spec if k in RANGE and k not in CHOICES] if "choices" in spec else []
    if mixed:  # (was "unknown key 'low' ...; did you mean 'low'?": probe)
        raise ConfigError(f"{at}: choices and {', '.join(mixed)} cannot be combined: give {{choices: [...]}} or "
                          f"{{low, high[, log, step]}}")
    for k in spec:
        if k not in allowed:
            raise ConfigError(f"unknown key {k!r} in {at}"
                              + (did_you_mean(k, RANGE + CHOICES) or f" (takes {', '.join(allowed)})"))
    try:
        if "choices" in spec:
            if not isinstance(spec["choices"], list) or not spec["choices"]:
                raise ValueError(f"choices must be a non-empty list, got {spec['choices']!r}")
            plain = lambda c: c is None or isinstance(c, (bool, int, float, str))  # noqa: E731
            decode = {json.dumps(c, sort_keys=True): c for c in spec["choices"] if not plain(c)}
            shown = [_fragment(c) for c in spec["choices"]]
            if len(set(shown)) < len(shown):
                raise ValueError(f"choices {spec['choices']} are not distinct (as names: {shown})")
            return CategoricalDistribution([c if plain(c) else json.dumps(c, sort_keys=True)
                                            for c in spec["choices"]]), decode
        for k in ("low", "high"):
            if k not in spec:
                raise ConfigError(f"{at}: missing required key {k!r}")
        low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in (low, high, step or 1)):
            raise ValueError(f"low, high and step must be numbers, got {spec}")
        if not isinstance(log, bool):
            raise ValueError(f"log must be true or false, got {log!r}")
        if step is not None and (step <= 0 or abs(round((high - low) / step) * step - (high - low)) > 1e-9 * step):
            raise ValueError(f"step {step} must be > 0 and divide high - low = {high - low:g} (Optuna would move "
                             f"high to the last step below it)")
        if isinstance(low, int) and isinstance(high, int) and isinstance(step or 1, int):
            return IntDistribution(low, high, log=log, step=step or 1), {}
        return FloatDistribution(float(low), float(high), log=log, step=step), {}
    except ValueError as exc:
        raise ConfigError(f"{at}: {exc}") from None


def _space(given: dict, set_keys: set[str], where: str) -> tuple[dict, dict]:
    """A sweep file's ``space`` -> ``({key: distribution}, {key: {encoded choice: value}})``
    (:func:`_distribution`). Raises ``ConfigError`` for a key that is not dotted, that is no
    hyper-parameter of a trial or that ``sets`` (``set_keys``) fixes too."""
    space, decode = {}, {}
    for key, spec in given.items():
        if not isinstance(key, str) or not all(key.split(".")):
            raise ConfigError(f"{where} [space]: {key!r} is not a dotted config key such as optimizer.params.lr")
        if key == "name" or under(key, ("features", "pretrain")) or key in RUN_ONLY_KEYS or key in set_keys:
            why = ("is also in sets" if key in set_keys else "is no hyper-parameter of a trial (features are built "
                   f"by 01_features.py, pretrain.* are pretrain.py's; name, {', '.join(RUN_ONLY_KEYS)} do not change "
                   f"what is trained)")
            raise ConfigError(f"{where} [space.{key}]: {key} {why}")
        space[key], decode[key] = _distribution(key, spec, where)
    return space, decode


def load_sweep(path: str | Path, comp: dict | None = None) -> Sweep:
    """Load and check a sweep file (docs/distributed.md, "Hyper-parameter sweeps").

    Input: its path, and the prepared competition ``comp`` when stage 00 has run (the
    experiment's ``train.folds`` are checked against its folds). Returns a :class:`Sweep`. Raises
    ``ConfigError`` naming the file and key for an unknown key (with the closest valid one), a
    missing or wrongly typed value, a bad distribution, a space key that ``--set`` cannot take
    or whose range reaches values the key does not allow (checked by loading the experiment with
    the ``sets`` and each range's ends and each choice, the other keys at their first value,
    :func:`lib.components.load_experiment`, so with the schema's and
    :data:`lib.core.schema.PARAM_RANGES`' ranges, e.g. ``model.params.dropout`` in [0, 1); a
    value that loads with another key's other value is not refused: that combination fails in
    its trial) or that is no hyper-parameter (``name``, ``features.*``, run-only keys, a key of
    ``sets``).
    """
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise ConfigError(f"sweep file not found: {path}")
    raw = parse_yaml(path.read_text(), where)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a YAML mapping at the top level")
    for key in raw:
        if key not in KEYS:
            raise ConfigError(f"unknown key {key!r} in {where}{did_you_mean(key, KEYS)} (a sweep file takes: "
                              f"{', '.join(KEYS)})")
    for key in ("experiment", "space"):
        if raw.get(key) in (None, "", {}):
            raise ConfigError(f"{where}: " + ("space is empty; give at least one dotted key and its distribution"
                                              if key == "space" and raw.get(key) == {} else f"missing required key {key!r}"))
    o = {k: raw.get(k, v) for k, v in KEYS.items()}
    nat = lambda v, least: isinstance(v, int) and not isinstance(v, bool) and v >= least  # noqa: E731
    for key, ok, what in (("experiment", isinstance(o["experiment"], str), "a config path"),
                          ("space", isinstance(o["space"], dict), "a mapping of dotted keys to distributions"),
                          ("trials", nat(o["trials"], 0), "an integer >= 0"),
                          ("startup_trials", nat(o["startup_trials"], 0), "an integer >= 0"),
                          ("seed", o["seed"] is None or nat(o["seed"], 0), "an integer >= 0 or null"),
                          ("pruner", o["pruner"] in ("median", "none"), "median or none"),
                          ("sets", isinstance(o["sets"], list) and all(isinstance(s, str) for s in o["sets"]),
                           "a list of key=value strings")):
        if not ok:
            raise ConfigError(f"{where}: {key} must be {what}, got {o[key]!r}")
    exp = Path(o["experiment"]) if Path(o["experiment"]).is_absolute() else ROOT / o["experiment"]
    space, decode = _space(o["space"], {s.partition("=")[0].strip() for s in o["sets"]}, where)
    try:
        base = load_experiment(exp, o["sets"], comp, name_variant=False)
    except ConfigError as exc:
        raise ConfigError(f"{where} (experiment/sets): {exc}") from None
    idle = ([k for k in space if under(k, NOT_FOR_CLASSICAL)]
            if is_classical(base["model"]) and "model.name" not in space else [])
    if idle:  # a --set passes them over (a run's overrides go to every experiment): every trial would be the same
        raise ConfigError(f"{where} [space.{idle[0]}]: {idle[0]} does not apply to the scikit-learn member "
                          f"{base['model']['name']!r} of {o['experiment']} (docs/zoo.md): every trial would fit the same")
    samples = {k: ([decode[k].get(c, c) for c in d.choices] if isinstance(d, CategoricalDistribution) else
                   [d.low, d.high] if isinstance(d, IntDistribution) else [_rounded(d.low), _rounded(d.high)])
               for k, d in space.items()}  # the ends as a trial gets them (floats rounded: _suggest)
    first, errors = {k: v[0] for k, v in samples.items()}, {}

    def error(values: dict) -> ConfigError | None:
        seen = json.dumps(values, sort_keys=True)
        if seen not in errors:
            errors[seen] = _load_error(exp, o["sets"], values)
        return errors[seen]

    for key, vs in samples.items():  # each value of each key, the others at their first: refused unless
        for v in vs:                 # another key's value mends it (then only the combination fails, in its trial)
            values = {**first, key: v}
            if error(values) is not None and all(error({**values, k: w}) is not None for k, ws in samples.items()
                                                 if k != key for w in ws if w != values[k]):
                raise ConfigError(f"{where} [space.{key}]: {error(values)}") from None
    return Sweep(path, exp, space, decode, o["trials"], o["sets"], o["pruner"], o["startup_trials"], o["seed"],
                 variant_name(base["name"], o["sets"]))


def _load_error(exp: Path, sets: list, values: dict) -> ConfigError | None:
    """The error of loading experiment ``exp`` with ``sets`` and a trial's ``values``, or ``None``."""
    try:
        load_experiment(exp, sets + overrides(values))
    except ConfigError as exc:
        return exc
    return None


def overrides(values: dict) -> list[str]:
    """``{dotted key: value}`` as ``--set`` items (values as JSON, which the YAML parser reads back)."""
    return [f"{k}={json.dumps(v)}" for k, v in values.items()]


def _fragment(value) -> str:
    """A value as it appears in a trial's name: floats with 4 significant digits (no ``+`` in
    exponents), lists joined by ``_``; text with other characters than ``A-Za-z0-9._-`` gets a hash."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:.4g}".replace("e+", "e")
    text = "_".join(map(_fragment, value)) if isinstance(value, (list, tuple)) else str(value)
    if _SAFE.match(text):
        return text
    digest = hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:6]
    return re.sub(r"[^A-Za-z0-9._-]", "", text)[:20] + "~" + digest


def short_keys(keys) -> dict:
    """``{dotted key: its shortest suffix that no other key ends with}``, never starting at
    ``params`` nor one character long (``optimizer.params.lr`` -> ``lr``, ``augment.mixup.p`` ->
    ``mixup.p``); distinct keys get distinct labels."""
    keys, out = list(keys), {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            tail = parts[-n:]
            if n < len(parts) and (tail[0] == "params" or len(".".join(tail)) < 2):
                continue
            if not any(o.split(".")[-n:] == tail for o in keys if o != key):
                break
        out[key] = ".".join(tail)
    return out


def trial_name(stem: str, values: dict) -> str:
    """The experiment name of a trial: ``stem@label=value,...`` in the order of the
    :func:`short_keys` labels, floats with 4 significant digits (the values a trial trains with
    are rounded so, so the name says exactly what was trained). Deterministic; distinct values give
    distinct names; never a ``+<hash>`` variant name (:func:`lib.core.config.variant_name`): it
    holds ``@``. Names over 200 characters become ``stem@<12 hex of a hash of the values>``."""
    short = short_keys(values)
    body = ",".join(f"{short[k]}={_fragment(values[k])}" for k in sorted(values, key=short.get))
    return f"{stem}@{body}" if len(stem) + len(body) < 200 else f"{stem}@{hashlib.sha1(body.encode()).hexdigest()[:12]}"


def direction(comp: dict) -> str:
    """``maximize`` or ``minimize``: the direction of the competition's metric (``comp['metric']``)."""
    return "maximize" if get_metric(comp["metric"], comp).higher_is_better else "minimize"


def printable(storage: str) -> str:
    """``storage`` as printed: an SQLAlchemy URL with its password, if any, shown as ``***``."""
    try:
        return sqlalchemy.engine.make_url(storage).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:  # not a URL (journal:PATH)
        return storage


def _storage(storage: str):
    """Optuna storage for ``--storage``: ``journal:PATH`` is Optuna's append-only journal file
    (``JournalStorage`` with an open-lock, safe on a disk the machines share, NFS included; it has
    no heartbeat, so a killed worker's trial stays running); anything else is an SQLAlchemy URL
    (``sqlite:///file.db``, waiting up to 60 s for a lock; ``postgresql://user:password@host/db``
    for workers on several machines) opened as ``RDBStorage``, whose heartbeat (60 s) marks the
    trials of killed workers failed. Raises what SQLAlchemy or the driver raise."""
    if storage.startswith("journal:"):
        path = storage[len("journal:"):]
        return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    engine = {"connect_args": {"timeout": 60}} if storage.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(storage, engine_kwargs=engine, heartbeat_interval=60, grace_period=240)


def _storage_hint(storage: str) -> str:
    """What a ``--storage`` that could not be opened was probably meant to be ("" if nothing)."""
    if storage.startswith("postgres://"):
        return " (SQLAlchemy names it postgresql://)"
    if "://" not in storage and not storage.startswith("journal:"):
        return (" (expected journal:PATH, a file on a disk the workers share, or an SQLAlchemy URL: sqlite:///PATH, "
                "postgresql://USER:PASSWORD@HOST/DATABASE)")
    if storage.startswith("sqlite:///") and not storage.startswith("sqlite:////"):
        return f" (sqlite:///PATH is relative to the current folder, {Path.cwd()}; sqlite:////PATH is absolute)"
    return ""


def open_study(sweep: Sweep, name: str, storage: str, comp: dict) -> optuna.Study:
    """Create the study ``name`` in ``storage`` or join it when it exists, with a TPE sampler
    (:func:`run_sweep` seeds it with ``seed`` + the trial's number at each trial) and Optuna's
    ``MedianPruner`` (Akiba et al. 2019; ``startup_trials`` trials before it prunes) or none, in
    the storage :func:`_storage` opens. Returns the study. Raises ``ConfigError`` for a storage
    that cannot be opened, or a study made for another metric direction, experiment or search space."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # sweep.py prints its own lines; errors reach the caller
    want = direction(comp)
    shown = printable(storage)
    for attempt in range(6):  # workers started together race to create the tables and the study
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                store = _storage(storage)
            study = optuna.create_study(study_name=name, storage=store, direction=want, load_if_exists=True)
            break
        except PipelineError:
            raise
        except Exception as exc:  # sqlalchemy's errors, a missing driver, a malformed URL
            retry = isinstance(exc, (sqlalchemy.exc.DBAPIError, optuna.exceptions.StorageInternalError))
            if attempt == 5 or not retry:  # (retry: the database was locked, or created meanwhile)
                raise ConfigError(f"--storage {shown}: cannot open the study {name!r}: {exc}{_storage_hint(storage)}"
                                  ) from None
            time.sleep(0.2 + random.random())
    if study.direction.name.lower() != want:
        raise ConfigError(f"study {name!r} in {shown} is to {study.direction.name.lower()}, but the competition "
                          f"metric {comp['metric']} is to {want}: use another --study or --storage")
    mine = {"experiment": sweep.stem, "metric": comp["metric"], "space": sorted(sweep.space)}  # (a key added too)
    for key, value in mine.items():
        old = study.user_attrs.get(key)
        if old is None:
            study.set_user_attr(key, value)
        elif old != value:
            raise ConfigError(f"study {name!r} in {shown} sweeps {key} {old!r}, this sweep {value!r}: use another "
                              f"--study (the default is the sweep file's name)")
    for t in study.get_trials(deepcopy=False):  # (a running trial may hold only some of its parameters yet)
        for key, d in t.distributions.items():
            if sweep.space.get(key) != d:
                raise ConfigError(f"study {name!r} in {shown} holds trials of another search space (trial "
                                  f"{t.number}: {key} {d}, here {sweep.space.get(key)}): use another --study")
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=sweep.startup_trials) if sweep.pruner == "median"
              else optuna.pruners.NopPruner())
    return optuna.load_study(study_name=name, storage=store, sampler=optuna.samplers.TPESampler(seed=sweep.seed),
                             pruner=pruner)


def _twin(study: optuna.Study, number: int, name: str):
    """A COMPLETE trial of experiment ``name``, else a RUNNING one of a lower number, else None."""
    twins = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
             if t.number != number and t.user_attrs.get("experiment") == name]
    done = [t for t in twins if t.state == TrialState.COMPLETE]
    return done[0] if done else next((t for t in twins if t.number < number), None)


class InvalidValues(ConfigError):
    """A trial's values are each within their range but not valid together (e.g. ``train.epochs``
    1 with ``scheduler.params.warmup_epochs`` 2): the trial fails, the sweep goes on."""


def _record_trial(trial: optuna.Trial, s: dict, metric: str, twin, reported: bool) -> str:
    """Put a finished trial's results in its study: each fold's running mean of ``metric`` when
    none was ``reported`` while training (an experiment kept whole: the pruner's medians count
    it), the OOF scores of ``s`` (:func:`train_experiment`'s) as user attrs, ``same_as`` for the
    values of an earlier trial ``twin`` (the OOF scores as 04 scores them, ``s["postprocessed"]``,
    where the competition's decision section changes them). Returns the line's note on what was trained."""
    if not reported:
        scores = [f[metric] for f in s.get("folds") or [] if metric in f]
        for i in range(len(scores)):
            trial.report(sum(scores[:i + 1]) / (i + 1), step=i)
    for m, v in (s.get("postprocessed") or s["oof"]).items():  # a fixed decision.threshold applied, masks ...
        trial.set_user_attr(f"oof_{m}", v)
    if twin is None:
        return " (trained earlier)" if s["skipped"] else ""
    trial.set_user_attr("same_as", twin.number)  # trained again only when its config, folds or features changed
    return f" (same values as trial {twin.number}: " + ("up to date, not trained again)" if s["skipped"] else
                                                         "trained again: its config, folds or features changed since)")


def _trial_seed(seed: int, number: int) -> int:
    """The sampler seed of trial ``number`` of a sweep seeded ``seed``: the SHA-256 of both, so that
    studies of other seeds draw other sequences (``seed + number`` made seed 11's trial 0 seed
    7's trial 4)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{number}".encode()).digest()[:4], "little")


def run_sweep(sweep: Sweep, study: optuna.Study, out: Outputs, n_trials: int, echo=print) -> None:
    """Run ``n_trials`` trials of ``sweep`` in ``study`` (this worker's share) on the prepared
    competition and feature sets of ``out``.

    Each trial trains experiment :func:`trial_name` (``models/<name>/``, ``oof/<name>.csv``;
    training log in ``sweeps/<study>/trial<k>.log``), reports the running mean of its folds'
    scores after each fold and is pruned (Optuna's ``MedianPruner``) before the next fold when it
    falls behind; values equal to a COMPLETE trial's train only when what the models depend on
    changed since (the experiment file, the folds, the features: :func:`train_experiment`'s up-to-
    date check; else its models are kept), to a RUNNING one's (another worker) are pruned.
    With ``sweep.seed``, each trial draws from a TPE sampler seeded by ``seed`` and its number
    (:func:`_trial_seed`). A trial whose experiment is kept whole reports its folds' scores too.
    User attrs: ``experiment``, ``oof_<metric>``, ``same_as``.
    A trial whose values are valid one by one but not together is failed with a line saying so
    (user attr ``invalid``: the reason) and the sweep goes on.
    ``echo`` prints one line per trial. Raises what a trial raises (``PipelineError``: bad data,
    missing stage outputs; ``KeyboardInterrupt``), after Optuna marks the trial failed.
    """
    comp = out.load_competition()
    metric = comp["metric"]
    all_folds = sorted(int(f) for f in out.load_split("train")["fold"].unique() if int(f) >= 0)
    logs = out.root / "sweeps" / study.study_name
    logs.mkdir(parents=True, exist_ok=True)
    short = short_keys(sweep.space)

    def objective(trial: optuna.Trial) -> float:
        t0 = time.time()
        if sweep.seed is not None:  # per trial: workers started together drew the same values from one seed;
            # (seed, number) hashed: with seed + number, seeds 7 and 11 replayed each other 4 trials apart
            trial.study.sampler = optuna.samplers.TPESampler(seed=_trial_seed(sweep.seed, trial.number))
        values = _suggest(trial, sweep)
        name = trial_name(sweep.stem, values)
        trial.set_user_attr("experiment", name)
        head = f"trial {trial.number:>3}  " + " ".join(f"{short[k]}={_fragment(values[k])}"
                                                       for k in sorted(values, key=short.get))
        twin = _twin(trial.study, trial.number, name)
        if twin is not None and twin.state != TrialState.COMPLETE:
            echo(f"{head}  -> same values as trial {twin.number}, running in another worker: pruned")
            raise optuna.TrialPruned(f"same values as running trial {twin.number}")
        try:
            cfg = load_experiment(sweep.experiment, sweep.sets + overrides(values))
        except ConfigError as exc:  # each value is valid alone (load_sweep checks them), not with the others
            echo(f"{head}  -> failed, not trained: these values do not go together in {sweep.path}: {exc}")
            trial.set_user_attr("invalid", str(exc))
            raise InvalidValues(str(exc)) from None
        cfg["name"] = name
        folds = all_folds if cfg["train"]["folds"] is None else [int(f) for f in cfg["train"]["folds"]]
        done = []
        echo(head, end="", flush=True)

        def on_fold(fold: int, info: dict) -> None:
            done.append(info[metric])
            echo(f"  fold {fold} {info[metric]:.4f}", end="", flush=True)
            trial.report(sum(done) / len(done), step=len(done) - 1)
            if len(done) < len(folds) and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after fold {fold}")

        from .experiment import train_experiment  # torch: imported when a trial trains

        with open(logs / f"trial{trial.number}.log", "a") as fh:
            try:
                s = train_experiment(cfg, out, log=lambda m: print(m, file=fh, flush=True), on_fold=on_fold)
            except optuna.TrialPruned as exc:
                echo(f"  -> {exc} ({format_seconds(time.time() - t0)})")
                raise
            except BaseException as exc:
                what = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"failed: {type(exc).__name__}"
                echo(f"  -> {what} ({format_seconds(time.time() - t0)}; log {fh.name})")
                raise
        how = _record_trial(trial, s, metric, twin, reported=bool(done))
        value = (s.get("postprocessed") or s["oof"])[metric]  # as 04 and the leaderboard score it
        echo(f"  -> OOF {metric} {value:.4f}{' (partial)' if s['partial'] else ''}{how} "
             f"({format_seconds(time.time() - t0)})  {name}")
        return value

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own line per trial; errors reach the caller
    _run_trials(study, objective, n_trials)


def _suggest(trial: optuna.Trial, sweep: Sweep) -> dict:
    """The trial's values ``{dotted key: value}``, drawn from ``sweep.space`` (choices decoded;
    floats to 4 significant digits, which names the trial's experiment)."""
    values = {}
    for key, d in sweep.space.items():
        if isinstance(d, CategoricalDistribution):
            values[key] = sweep.decode[key].get(v := trial.suggest_categorical(key, d.choices), v)
        elif isinstance(d, IntDistribution):
            values[key] = trial.suggest_int(key, d.low, d.high, step=d.step, log=d.log)
        else:
            values[key] = _rounded(trial.suggest_float(key, d.low, d.high, step=d.step, log=d.log))
    return values


def _rounded(value: float) -> float:
    """A sampled float as a trial trains it and its name shows it: 4 significant digits."""
    return float(f"{value:.4g}")


def _run_trials(study: optuna.Study, objective, n_trials: int) -> None:
    """``study.optimize(objective, n_trials, catch=())``'s ask/tell loop, with SIGINT held back
    during ``study.ask()``: the trial is a RUNNING row of the storage before ``ask`` returns, and a
    Ctrl-C in between (as inside ``study.optimize``) left it RUNNING for ever, so a later trial with
    the same values was pruned as "running in another worker". A Ctrl-C held back arrives once the
    trial is known, and fails it. Pruned trials are told PRUNED; any exception FAIL, then raised.
    With a heartbeat storage (RDB), as ``optimize`` does: the trials of killed workers whose
    heartbeat is older than the grace period are failed before each ``ask`` (Optuna's
    ``fail_stale_trials``), and a thread records this trial's heartbeat while it runs (Optuna's own
    heartbeat thread; without it a killed worker's trial stayed running for ever); they are failed
    once first also when ``n_trials`` is 0 (``--trials 0``: the summary shows no dead trial running)."""
    with warnings.catch_warnings():  # "heartbeat ... used with Study.optimize": we run it ourselves
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if is_heartbeat_enabled(study._storage):
            optuna.storages.fail_stale_trials(study)
        for _ in range(n_trials):
            _run_trial(study, objective)


def _run_trial(study: optuna.Study, objective) -> None:
    """One trial of :func:`_run_trials`."""
    storage = study._storage  # (Optuna's heartbeat helpers take the study's storage; no public accessor)
    if is_heartbeat_enabled(storage):
        optuna.storages.fail_stale_trials(study)
    held = _sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        trial = study.ask()
    except BaseException:
        _sigmask(signal.SIG_SETMASK, held)
        raise
    try:
        _sigmask(signal.SIG_SETMASK, held)
        with get_heartbeat_thread(trial._trial_id, storage):
            value = objective(trial)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
        return
    except InvalidValues:  # told FAIL; the sweep goes on with other values
        study.tell(trial, state=TrialState.FAIL)
        return
    except BaseException:
        study.tell(trial, state=TrialState.FAIL)
        raise
    study.tell(trial, value)


_sigmask = getattr(signal, "pthread_sigmask", lambda how, mask: None)  # no-op where signals cannot be held back


def summarize(study: optuna.Study, out: Outputs, top: int = 3, sweep: Sweep | None = None) -> dict:
    """Write ``sweeps/<study>/trials.csv`` (``study.trials_dataframe()`` plus ``experiment``) and
    ``sweeps/<study>/best.txt`` (the names of the ``top`` best COMPLETE trials' experiments whose
    training record is there, one per line, best first), both atomically. ``sweep`` (optional)
    shows list-valued choices as in the trial names.

    Returns ``{"table": DataFrame of every trial best first (number, state, value, experiment,
    params), "best": [names], "partial": whether one of them misses folds, "trials_csv",
    "best_txt": paths}``. Raises nothing of its own.
    """
    import pandas as pd

    folder = out.root / "sweeps" / study.study_name
    df = study.trials_dataframe()  # read apart from ``trials``: another worker may add a trial in between
    if len(df):
        df["experiment"] = df["user_attrs_experiment"] if "user_attrs_experiment" in df else None
    trials = study.get_trials(deepcopy=False)
    floats = {k for t in trials for k, d in t.distributions.items() if isinstance(d, FloatDistribution)}
    for col in [f"params_{k}" for k in floats if f"params_{k}" in df]:  # as trained (_suggest: float ranges only)
        df[col] = df[col].map(lambda v: v if pd.isna(v) else _rounded(v))
    write_csv(folder / "trials.csv", df)
    sign = 1 if study.direction.name == "MAXIMIZE" else -1
    rank = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.RUNNING: 2, TrialState.WAITING: 3}
    ordered = sorted(trials, key=lambda t: (rank.get(t.state, 4), -sign * t.value if t.value is not None
                                            else float("inf"), t.number))
    short, decode = short_keys(sorted({k for t in trials for k in t.params})), sweep.decode if sweep else {}
    shown = lambda k, v: f"{short[k]}={_fragment(decode.get(k, {}).get(v, v))}"  # noqa: E731
    table = pd.DataFrame([{"number": t.number, "state": t.state.name, "value": t.value,
                           "experiment": t.user_attrs.get("experiment"),
                           "params": " ".join(shown(k, t.params[k]) for k in sorted(t.params, key=short.get))}
                          for t in ordered])
    best, partial = [], False
    for t in ordered:
        name = t.user_attrs.get("experiment")
        rec = out.trained(name).check(hashes=False)[0] if name and t.state == TrialState.COMPLETE else None
        if rec is not None and name not in best and len(best) < top:
            best.append(name)
            partial |= bool(rec["info"].get("partial"))
    with atomic_path(folder / "best.txt") as tmp:
        tmp.write_text("".join(f"{n}\n" for n in best))
    return {"table": table, "best": best, "partial": partial, "trials_csv": folder / "trials.csv",
            "best_txt": folder / "best.txt"}
