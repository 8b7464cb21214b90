"""Configuration: YAML loading with ``base:`` inheritance, defaults and validation against the schema.

Two kinds of YAML file (docs/competition.md and docs/experiment.md):

* a *competition* file (``configs/data/*.yaml``) says what the data is: where the CSVs and audio
  are, id and target columns, classes, groups, folds, metric, submission format;
* an *experiment* file (``configs/*.yaml``) says how to model it: every component is a
  ``{name, params}`` section resolved through a :class:`Registry` (the style of
  koukyo1994/kaggle-rfcx), and ``base: other.yaml`` inherits from another experiment.

Here: reading (:func:`read_experiment`, :func:`read_competition`), every default filled from the
schemas (:mod:`lib.core.schema`, the one source of defaults; they only check and fill, the
configs stay dicts) and checked: unknown keys (with the closest valid one), wrong types and
impossible values are :class:`ConfigError` naming the file (or ``--set`` override) and the key.
Component names and parameters are checked one layer up, against the registries
(:mod:`lib.components`, whose ``load_experiment``/``load_competition`` the stages call).
"""
from __future__ import annotations

import copy
import hashlib
import math
import re
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .registry import did_you_mean
from .schema import COMPONENTS, DEFAULT_ROW_ID, Competition, Experiment, fill_defaults, source_of, validate

ROOT = Path(__file__).resolve().parents[2]
"""The project folder (the parent of ``lib/``)."""

TASKS = ("binary", "multiclass", "multilabel")
AGGREGATIONS = ("mean", "max", "vote")
RUN_ONLY_KEYS = ("train.folds", "train.device", "train.compile", "train.distributed", "train.sync_bn")
"""Keys that change how a run goes, not what it trains: ``--set`` on them keeps the experiment's
name, and the training key leaves them out, so folds trained with different values merge (a
DDP run over several ranks puts its number of ranks and ``sync_bn`` in its key instead:
:func:`lib.runs.experiment.experiment_key`). Help texts and docs take them from here."""

ADDED_KEYS = {"train.epoch_repeats": 1, "train.monitor": None, "inputs.group_norm": False}
"""Config keys added after experiments were trained, with the value that trains as before: at that
value :func:`training_settings` leaves them out, so finished models stay valid."""


def training_settings(cfg: dict) -> dict:
    """What of an experiment config its models depend on: a copy without its ``name``, its
    ``pretrain`` section (a ``pretrain.py`` checkpoint's record id stands for it), the paths of
    ``model.params.pretrained`` and ``features.params.model_dir`` (``True`` instead: the key holds
    what is there, :func:`lib.models.pretrained_weights.pretrained_id`, the feature set's record), the
    :data:`RUN_ONLY_KEYS` and the :data:`ADDED_KEYS` at their neutral values
    (:func:`lib.runs.experiment.experiment_key` fingerprints it)."""
    what = copy.deepcopy(cfg)
    what.pop("name", None)
    what.pop("pretrain", None)
    for section in ("model", "features"):  # paths whose contents the key holds, not where they are (moved: the same)
        params = (what.get(section) or {}).get("params") or {}
        for key in ("pretrained", "model_dir"):
            if isinstance(params.get(key), str):
                params[key] = True  # (given: a path to nothing is still not the same as none given)
    for k in RUN_ONLY_KEYS:
        section, key = k.split(".")
        what.get(section, {}).pop(key, None)
    for k, neutral in ADDED_KEYS.items():
        section, key = k.split(".")
        if what.get(section, {}).get(key, neutral) == neutral:
            what.get(section, {}).pop(key, None)
    return what


class _Default:
    """A component parameter left at its default (not given), as :func:`setting_changes` prints it."""

    def __repr__(self) -> str:
        return "(default)"


DEFAULT = _Default()


def setting_changes(trained: dict, given: dict) -> list[str]:
    """The settings (:func:`training_settings`) of experiment config ``given`` that differ from
    those of ``trained`` (a trained model's ``config.yaml``), as ``"dotted.key: old -> new"``;
    keys only one of them has (a config of an older version) are not compared, but in a
    component's ``params`` (kept as given, without defaults) a key given on one side only is
    (``(default)`` on the other). ``[]``: the same."""
    def walk(a, b, prefix):
        if isinstance(a, dict) and isinstance(b, dict):
            keys = a.keys() | b.keys() if prefix.endswith("params.") else a.keys() & b.keys()
            return [c for k in keys for c in walk(a.get(k, DEFAULT), b.get(k, DEFAULT), f"{prefix}{k}.")]
        return [] if a == b else [f"{prefix[:-1]}: {a!r} -> {b!r}"]
    return sorted(walk(training_settings(trained), training_settings(given), ""))


def deep_merge(base: dict, override: dict) -> dict:
    """Return ``base`` updated recursively by ``override`` (dicts merge, other values replace)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# --- YAML ----------------------------------------------------------------------------------------

class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, plus YAML 1.2 floats without a dot (``1e-3``, ``5E+2``), which
    YAML 1.1 reads as strings, and mapping keys that are never booleans: YAML 1.1 reads ``on``,
    ``off``, ``yes`` and ``no`` as booleans, so ``groups: {regex: ..., on: path}`` lost its key
    ``on`` (values keep YAML 1.1's rule: ``amp: no`` is false). A key given twice in one mapping
    is an error (PyYAML keeps the last silently, so ``train: {epochs: 2}`` then ``train: {ema:
    null}`` lost the epochs)."""

    def construct_mapping(self, node, deep=False):
        for key, _ in node.value:
            if key.tag == "tag:yaml.org,2002:bool":
                key.tag = "tag:yaml.org,2002:str"
        return super().construct_mapping(node, deep)

    def flatten_mapping(self, node):
        """Refuse a key given twice among the mapping's own entries, before ``<<`` merges (whose
        keys the mapping may override) are flattened into it; PyYAML flattens a merged node in
        place, so a node is checked once, the first time."""
        checked = self.__dict__.setdefault("_checked", set())
        if id(node) not in checked:
            checked.add(id(node))
            seen = {}
            for key, _ in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    if key.value in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"key {key.value!r} is given twice in one mapping (first at line "
                            f"{seen[key.value] + 1}); merge the two into one", key.start_mark)
                    seen[key.value] = key.start_mark.line
        super().flatten_mapping(node)


_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def parse_yaml(text: str, where: str):
    """Parse YAML ``text`` (a file's content or a ``--set`` value) with the project's loader.

    Returns the parsed object; raises ``ConfigError`` naming ``where`` and, for a syntax error,
    the line and column.
    """
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{where}: YAML syntax error{at}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: cannot read YAML: {exc}") from None


def _load_chain(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, dict]]:
    """``[(file, its own mapping without 'base')]`` along the ``base:`` chain, the root base first."""
    if path.resolve() in [s.resolve() for s in seen]:
        raise ConfigError(f"{seen[-1]}: 'base' chain loops back to {path}: " + " -> ".join(map(str, (*seen, path))))
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}" + (f" (the base of {seen[-1]})" if seen else ""))
    cfg = parse_yaml(path.read_text(), str(path))
    cfg = {} if cfg is None else cfg
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: expected a YAML mapping at the top level")
    base = cfg.pop("base", None)
    if base is None:
        return [(path, cfg)]
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' must be the path of another config file, got {base!r}")
    return [*_load_chain(path.parent / base, (*seen, path)), (path, cfg)]


def _own_name(chain: list[tuple[Path, dict]], path: Path) -> str:
    """An experiment file's name: its own ``name:`` or its stem; a base's name names the base alone."""
    return chain[-1][1].get("name") or path.stem


def check_no_name_override(overrides: list[str] | None) -> None:
    """Raise ``ConfigError`` for a ``--set name=...``: a run is named by ``--name`` (or by its
    config and overrides), and ``run_all.sh`` names its runs before training them (``python -m
    lib.cli name``), which a ``name`` override would leave naming another experiment."""
    named = [o for o in overrides or [] if o.partition("=")[0].strip() == "name"]
    if named:
        raise ConfigError(f"--set {named[0]}: a run is named with --name (02_train.py, 03_infer.py), not with --set")


def config_name(path: str | Path) -> str:
    """The experiment name of config file ``path`` without overrides: :func:`_own_name` (never
    inherited from a ``base:``). Raises ``ConfigError`` as :func:`load_yaml` does."""
    return _own_name(_load_chain(Path(path)), Path(path))


def load_yaml(path: str | Path) -> dict:
    """Load a YAML mapping, following ``base:`` (a path relative to the file) recursively.

    Returns the merged mapping (without ``base``). Raises ``ConfigError`` naming the file when
    it is not found, not valid YAML (with the line), not a mapping, or when the ``base`` chain
    loops.
    """
    return _merge(_load_chain(Path(path)))


def _merge(chain: list[tuple[Path, dict]], cfg: dict | None = None) -> dict:
    """``cfg`` (default empty) updated by each mapping of a ``base:`` chain in turn; a new dict.
    A component section (``model``, ``optimizer``, ...) naming another component than the one it
    inherits replaces it whole: the inherited ``params`` belong to the other component."""
    cfg = cfg or {}
    for _, raw in chain:
        for key in COMPONENTS:
            new, old = raw.get(key), cfg.get(key)
            if isinstance(new, dict) and isinstance(old, dict) and new.get("name", old.get("name")) != old.get("name"):
                cfg = {**cfg, key: {}}
        cfg = deep_merge(cfg, raw)
    return copy.deepcopy(cfg)


def _parse_override(item: str) -> tuple[list[str], Any]:
    """``"a.b=3"`` -> ``(["a", "b"], 3)``; raises ``ConfigError`` for a malformed item."""
    key, sep, value = item.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ConfigError(f"override {item!r} is not of the form key.sub=value")
    return parts, parse_yaml(value, f"--set {item}")


def apply_overrides(cfg: dict, overrides: list[str] | None) -> dict:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a config; returns a new dict.

    Example: ``["train.epochs=3", "train.folds=[0]"]``; ``train.swa.start=0.5`` where
    ``train.swa`` is null (off) makes it ``{start: 0.5}``; ``scheduler.name=one_cycle`` naming
    another component than the section's replaces the section, as ``base:`` does (the params
    belonged to the other component), keeping its params given before it (``--set
    scheduler.params.pct_start=0.2`` first: the order of a sweep's space). Raises ``ConfigError`` for a malformed
    item, a key given twice (the last would win, as a YAML key given twice would) or one that
    descends into a value that is neither a mapping nor null. Keys are not checked here
    (:func:`load_experiment` does).
    """
    keys = [item.partition("=")[0].strip() for item in overrides or []]
    if twice := sorted({k for k in keys if keys.count(k) > 1}):
        given = [o for o, k in zip(overrides, keys) if k == twice[0]]
        raise ConfigError(f"--set {twice[0]} is given more than once ({', '.join(given)}): give each key once")
    cfg = copy.deepcopy(cfg)
    for n, item in enumerate(overrides or []):
        (*parents, last), value = _parse_override(item)
        if len(parents) == 1 and parents[0] in COMPONENTS and last == "name" \
                and isinstance(cfg.get(parents[0]), dict) and cfg[parents[0]].get("name") != value:
            # another component: its params are not the old one's, but those given before it here are its own
            cfg[parents[0]] = apply_overrides({parents[0]: {"name": value}}, [
                o for o in overrides[:n] if o.strip().startswith(f"{parents[0]}.params.")])[parents[0]]
            continue
        node = cfg
        for depth, part in enumerate(parents):
            if node.get(part) is None:  # absent or null (an option that is off): the override turns it on
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item}: {'.'.join(parents[:depth + 1])} is {node!r}, not a mapping of "
                                  f"options")
        node[last] = value
    return cfg


def _override_sources(overrides: list[str] | None) -> list[tuple[str, dict]]:
    """Each override as a source for :func:`lib.core.schema.source_of`: ``("--set a.b=3", {"a": {"b": 3}})``."""
    return [(f"--set {item}", apply_overrides({}, [item])) for item in overrides or []]


# --- experiments ---------------------------------------------------------------------------------

def _empty_params(cfg: dict) -> dict:
    """``params: null`` of a component section, in a file or a ``--set``, as no parameters (``{}``); returns ``cfg``."""
    for key in COMPONENTS:
        if isinstance(cfg[key], dict) and cfg[key].get("params") is None:
            cfg[key]["params"] = {}
    return cfg


def read_experiment(path: str | Path, overrides: list[str] | None = None) -> tuple[dict, list[tuple[str, dict]]]:
    """Read an experiment config: the ``base:`` chain merged over the schema's defaults
    (:func:`lib.core.schema.fill_defaults`), ``--set`` ``overrides`` applied, every default
    filled and the whole checked against :class:`lib.core.schema.Experiment`; ``name`` is the
    file's own ``name:`` or its stem (never inherited: a child of a named base would otherwise
    train over the base's models) and ``features.set`` (the cache folder under ``output/features/``) to the
    feature set's name.

    Returns ``(cfg, sources)``: the config (keys ``name, features, frontend, model, optimizer,
    scheduler, loss, inputs, augment, tta, train, pretrain``; ``frontend`` ``None`` unless the experiment
    hears the waveform; every component section has ``params``, a dict) and ``[(file or
    "--set ...", its own mapping)]`` for error messages. Component names and parameters are not
    checked here (:func:`lib.components.load_experiment` does). Raises ``ConfigError`` naming the
    file (or override) and the key, also for ``train.device`` ``cuda`` without a GPU.
    """
    path = Path(path)
    check_no_name_override(overrides)
    chain = _load_chain(path)
    cfg = _merge(chain, fill_defaults(Experiment, {}))
    cfg["name"] = _own_name(chain, path)
    _empty_params(cfg)
    cfg = _empty_params(fill_defaults(Experiment, apply_overrides(cfg, overrides)))  # (sections replaced by others)
    where = str(path)
    sources = [(str(p), raw) for p, raw in chain] + _override_sources(overrides)
    validate(Experiment, cfg, sources, where)
    device = cfg["train"]["device"]
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"{source_of(sources, ['train', 'device'], where)}: train.device is {device!r}, but torch "
                              f"finds no CUDA GPU here; use auto or cpu")
    cfg["features"]["set"] = cfg["features"]["set"] or cfg["features"]["name"]
    return cfg, sources


def changing_overrides(overrides: list[str] | None) -> list[str]:
    """The ``--set`` items that change what an experiment trains: all but :data:`RUN_ONLY_KEYS`,
    ``name`` (the name chosen) and ``pretrain.*`` (pretrain.py's record holds them; 02 trains from
    the checkpoint as it is), as ``key=value`` with spaces around both trimmed. Raises nothing
    (malformed items are :func:`apply_overrides`'s to report)."""
    out = []
    for item in overrides or []:
        key, _, value = item.partition("=")
        if key.strip() not in (*RUN_ONLY_KEYS, "name") and key.strip().split(".")[0] != "pretrain":
            out.append(f"{key.strip()}={value.strip()}")
    return out


def variant_name(stem: str, overrides: list[str] | None) -> str:
    """The experiment name of a run of the config named ``stem`` with ``--set`` ``overrides``.

    ``stem`` itself when no override changes what is trained (see :func:`changing_overrides`),
    so that folds trained in separate runs merge; else ``stem+<8 hex of sha1 of the sorted
    changing overrides>``, so that a variant never overwrites the base experiment. Raises nothing.
    """
    changes = sorted(changing_overrides(overrides))
    if not changes:
        return stem
    return f"{stem}+{hashlib.sha1(chr(10).join(changes).encode()).hexdigest()[:8]}"


# --- competitions --------------------------------------------------------------------------------

def _require(cfg: dict, key: str, where: str):
    if cfg.get(key) in (None, ""):
        raise ConfigError(f"{where}: missing required key {key!r}")
    return cfg[key]


def _csv_columns_read(cfg: dict, where: str) -> None:
    """Raise ``ConfigError`` when a split without a ``csv`` (a folder of files) would be read for
    columns: the training rows' group, metadata, fold, slice or stratification columns, the test
    rows' metadata and, when they need their groups (``groups.test``, ``decision.group_aggregate``),
    ``groups.column``."""
    groups, folds = cfg["groups"] or {}, cfg["folds"]
    uses_columns = [k for k, v in (("groups.column", groups.get("column")), ("metadata", any(cfg["metadata"].values())),
                                   ("folds.column", folds["column"]), ("slices", cfg.get("slices")),
                                   ("folds.stratify_by", folds.get("stratify_by"))) if v]
    test_groups = groups.get("test") or (cfg.get("decision") or {}).get("group_aggregate")
    for split, needs in (("train", uses_columns), ("test", [k for k in uses_columns if k == "metadata" or (
            k == "groups.column" and test_groups)])):
        if cfg[split] and not cfg[split]["csv"] and needs:
            raise ConfigError(f"{where}: {', '.join(needs)} read(s) CSV columns, but [{split}] has no 'csv'")


def read_competition(path: str | Path, data_dir: str | Path | None = None) -> tuple[dict, str]:
    """Read a competition config: the ``base:`` chain merged, every default filled from
    :class:`lib.core.schema.Competition` (and those that depend on other keys: ``name``, the
    ``metric``/``metrics``, the fold ``scheme``, ``classes`` from ``target_columns``), checked
    against the schema and the task; ``data_dir`` resolved to an absolute path.

    ``data_dir`` (e.g. from ``--data-dir``, relative to the working directory) overrides the
    file's ``data_dir``, which is relative to the project folder (default ``input``).
    ``classes`` may be left out: stage 00 then takes the sorted labels found in the training
    data. Returns ``(cfg, where)`` (``docs/competition.md`` lists every key); metrics, fold
    schemes and other registered names are not checked here (:func:`lib.components.load_competition`
    does). Raises ``ConfigError`` naming the file and the missing, unknown (with the closest
    valid key) or wrong key.
    """
    path, where = Path(path), str(path)
    chain = _load_chain(path)
    cfg = fill_defaults(Competition, _merge(chain))
    validate(Competition, cfg, [(str(p), raw) for p, raw in chain], where)
    cfg["name"] = cfg["name"] or path.stem
    given = cfg["data_dir"]
    cfg["data_dir"] = str(Path(data_dir).resolve() if data_dir else (ROOT / given).resolve())
    beside = (path.parent / given).resolve()
    if not data_dir and not Path(cfg["data_dir"]).is_dir() and beside.is_dir() and not Path(given).is_absolute():
        raise ConfigError(f"{where}: data_dir {given!r} is relative to the project folder ({ROOT}), where there is "
                          f"no such folder; the folder beside this config is {beside}: write that path as data_dir, "
                          f"or pass --data-dir {beside}")  # (probes: a config kept in one's own folder)
    task = cfg["task"]
    if task not in TASKS:
        raise ConfigError(f"{where}: task {task!r} is not one of {TASKS}")
    train = cfg["train"]
    _inputs_section(cfg, where)
    _split_section(train, f"{where} [train]", labelled=segment_unit(cfg) != "segment")
    _check_segment_rows(cfg, where)
    if train["target_columns"] and task != "multilabel":
        raise ConfigError(f"{where} [train]: 'target_columns' (one 0/1 column per class) needs task: multilabel")
    if train["target_columns"] and not cfg["classes"]:
        cfg["classes"] = list(train["target_columns"])
    for key, values in (("classes", cfg["classes"] or []), ("positive", [cfg.get("positive")]),
                        ("normal_class", [cfg.get("normal_class")])):
        if any(isinstance(v, bool) for v in values):
            raise ConfigError(f"{where}: {key} {values if key == 'classes' else values[0]!r}: YAML reads yes, no, on, "
                              f"off, true and false without quotes as booleans; quote the class names (e.g. \"no\")")
    if cfg["classes"] is not None:
        cfg["classes"] = [str(c) for c in cfg["classes"]]
        check_classes(cfg, where)
    cfg["metric"] = cfg["metric"] or ("average_precision" if task == "multilabel" else "accuracy")
    cfg["metrics"] = cfg["metrics"] or [cfg["metric"]]
    if cfg["metric"] not in cfg["metrics"]:
        cfg["metrics"] = [cfg["metric"], *cfg["metrics"]]
    _decision_section(cfg, where)
    if cfg["test"]:
        _split_section(cfg["test"], f"{where} [test]", labelled=False)
    if cfg["audio"]["aggregate"] not in AGGREGATIONS:
        raise ConfigError(f"{where} [audio]: aggregate {cfg['audio']['aggregate']!r} is not one of {AGGREGATIONS}")
    groups = cfg["groups"]
    if groups and not (groups["column"] or groups["regex"]):
        raise ConfigError(f"{where} [groups]: give 'column' (a CSV column) or 'regex' (over the id or path)")
    _metadata_section(cfg, where)
    _subdivide_section(cfg, where)
    folds = cfg["folds"]
    _csv_columns_read(cfg, where)
    folds["scheme"] = folds["scheme"] or ("predefined" if folds["column"] else (
        "multilabel_stratified" if task == "multilabel" else "stratified") + (
        "_group" if groups or segment_unit(cfg) == "segment" else ""))
    if cfg["audio"] and cfg["audio"]["sample_rate"] is not None:
        cfg["audio"]["sample_rate"] = int(cfg["audio"]["sample_rate"])  # 16e3 -> 16000 (the schema: whole)
    if folds["scheme"] not in ("predefined", "leave_one_group_out"):
        folds["n_folds"] = folds["n_folds"] or 5  # (else stage 00 counts the column's values or the groups)
    if folds["scheme"] == "predefined" and not folds["column"]:
        raise ConfigError(f"{where} [folds]: scheme predefined needs 'column', the CSV column holding each row's fold")
    if folds["column"] and folds["scheme"] != "predefined":
        raise ConfigError(f"{where} [folds]: column {folds['column']!r} gives the shipped folds (scheme predefined), "
                          f"but scheme is {folds['scheme']!r}, which makes folds of its own: remove one of the two")
    _submission_section(cfg, where)
    return cfg, where


def _metadata_section(cfg: dict, where: str) -> None:
    """``metadata``'s lists as lists (``null``: none); raises ``ConfigError`` for a column in both."""
    cfg["metadata"] = {k: list(v or []) for k, v in cfg["metadata"].items()}
    if both := sorted(set(cfg["metadata"]["numeric"]) & set(cfg["metadata"]["categorical"])):
        raise ConfigError(f"{where}: metadata column(s) {both} are listed as numeric and as categorical: keep each "
                          f"in one list")


def _submission_section(cfg: dict, where: str) -> None:
    """Check the ``submission`` section against the task; fill ``label_separator`` (default
    ``train.label_separator``: labels joined as the training CSV joins them). Raises
    ``ConfigError`` naming the file and key."""
    sub = cfg["submission"]
    if not sub:
        return
    if sub["format"] == "probability" and cfg["task"] != "binary":
        raise ConfigError(f"{where} [submission]: format 'probability' (p of the positive class) is for binary tasks; "
                          f"this one is {cfg['task']}: use 'probabilities' (one column per class)")
    if sub["format"] in ("probabilities", "indicators") and sub["target_column"]:
        raise ConfigError(f"{where} [submission]: target_column {sub['target_column']!r} is the column of formats "
                          f"label and probability; format {sub['format']} writes a column per class, named as the "
                          f"class: remove target_column (given by a base: config, write `target_column: null` under submission)")
    if sub["label_separator"] is None:
        sub["label_separator"] = cfg["train"]["label_separator"] if cfg["train"] else " "
    for key in ("sample", "id_column") + (("target_column",) if sub["format"] in ("label", "probability") else ()):
        _require(sub, key, f"{where} [submission]")


def _decision_section(cfg: dict, where: str) -> None:
    """Check ``positive``, ``normal_class`` and the ``decision`` section against the task, groups
    and classes. Raises ``ConfigError`` naming the file and key."""
    if cfg.get("positive") is not None and cfg["task"] != "binary":
        raise ConfigError(f"{where}: positive {cfg['positive']!r} names the positive class of a binary task; this one "
                          f"is {cfg['task']}, whose every class is scored: remove it (given by a base: config, write "
                          f"`positive: null`)")
    normal = cfg["normal_class"]
    if normal is not None and cfg["classes"] and str(normal) not in cfg["classes"]:
        raise ConfigError(f"{where}: normal_class {normal!r} is not in classes {cfg['classes']}")
    decision = cfg["decision"]
    if decision["class_bias"] and cfg["task"] != "multiclass":
        raise ConfigError(f"{where} [decision]: class_bias is for multiclass tasks, this one is {cfg['task']}")
    if cfg["task"] == "multiclass" and decision["threshold"] != "auto":
        raise ConfigError(f"{where} [decision]: threshold {decision['threshold']!r} is for binary and multi-label "
                          f"tasks; a multiclass decision is the most probable class, shifted by class_bias if given")
    if isinstance(decision["threshold"], list) and cfg["task"] != "multilabel":
        raise ConfigError(f"{where} [decision]: a list of thresholds is for multi-label tasks (one per class)")
    if isinstance(decision["threshold"], list) and cfg["classes"] and len(decision["threshold"]) != len(cfg["classes"]):
        raise ConfigError(f"{where} [decision]: threshold lists {len(decision['threshold'])} values for the "
                          f"{len(cfg['classes'])} classes {cfg['classes']}: give one per class, in that order")
    if decision["group_aggregate"] and not cfg["groups"]:
        raise ConfigError(f"{where} [decision]: group_aggregate needs a groups section (which recordings form a group)")
    column = decision["slice_prior"]
    if column is not None and column not in cfg["slices"]:
        raise ConfigError(f"{where} [decision]: slice_prior {column!r} is not one of slices {cfg['slices']}: "
                          f"add it to slices (the training CSV's column whose values get their own class prior)")
    if column is not None and cfg["test"] and not cfg["test"].get("csv"):
        raise ConfigError(f"{where} [decision]: slice_prior {column!r} needs the column in the test set's CSV too, "
                          f"but [test] has no 'csv' (each test row is shifted by its own {column}'s prior)")
    if (cfg["submission"] or {}).get("unit") == "group" and not decision["group_aggregate"]:
        raise ConfigError(f"{where} [submission]: unit group (a row per group) needs decision.group_aggregate "
                          f"(mean or vote: how a group's recordings make its prediction)")
    known = set(cfg["classes"] or [])
    for rule in decision["mask"]:
        rule["classes"] = [str(c) for c in rule["classes"]]
        bad = [c for c in rule["classes"] if known and c not in known]
        if bad:
            raise ConfigError(f"{where} [decision.mask]: classes {bad} of rule {rule['where']!r} are not in {sorted(known)}")


def _subdivide_section(cfg: dict, where: str) -> None:
    """Check the ``subdivide`` section (train on classes x metadata values, docs/competition.md
    "Subdivided classes") against the task and the ``metadata`` columns: every ``by`` column a
    declared metadata column, named once; a numeric one with ``bands`` (strictly increasing
    edges), a categorical one without; no ``bands`` for a column outside ``by``; a binary or
    multiclass task. Raises ``ConfigError`` naming the file and key."""
    sub = cfg.get("subdivide")
    if not sub:
        return
    w = f"{where} [subdivide]"
    if cfg["task"] == "multilabel":
        raise ConfigError(f"{w}: subdividing classes needs one class per row (task binary or multiclass); this "
                          f"task is multilabel")
    numeric, categorical = cfg["metadata"]["numeric"], cfg["metadata"]["categorical"]
    declared = numeric + categorical
    for col in sub["by"]:
        if col not in declared:
            raise ConfigError(f"{w}: by: {col!r} is not a metadata column{did_you_mean(col, declared)} (declared: "
                              f"metadata.numeric {numeric}, metadata.categorical {categorical}); declare it there")
        if col in numeric and col not in sub["bands"]:
            raise ConfigError(f"{w}: by: {col!r} is a numeric metadata column: give its band edges in bands "
                              f"(e.g. bands: {{{col}: [40, 60]}}: {col} < 40, 40 <= {col} < 60, {col} >= 60)")
        if col in categorical and col in sub["bands"]:
            raise ConfigError(f"{w}: bands.{col}: {col!r} is a categorical metadata column (each value is its own "
                              f"subclass); bands are for numeric columns")
    if len(set(sub["by"])) != len(sub["by"]):
        raise ConfigError(f"{w}: by names a column more than once: {sub['by']}")
    for col, edges in sub["bands"].items():
        if col not in sub["by"]:
            raise ConfigError(f"{w}: bands.{col}: {col!r} is not in by {sub['by']}{did_you_mean(col, sub['by'])}")
        if not all(math.isfinite(e) for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
            raise ConfigError(f"{w}: bands.{col} must be finite, strictly increasing edges, got {edges}")


_FORMAT_SPEC = re.compile(r"(?:.?[<>=^])?[+\- ]?z?(?P<alt>#)?0?\d*[_,]?(?P<precision>\.\d+)?(?P<type>[a-zA-Z%])?$",
                          re.DOTALL)
"""Python's format-spec mini-language: whether a spec names a precision and a presentation type."""


class _Seconds(float):
    """A time in seconds that formats as ``:.12g`` without a presentation type (``5.0`` -> ``5``,
    ``1234.5625`` whole; ``{end:>5}``: ``"    5"``) and as any float with one (``{end:.1f}``)."""

    def __format__(self, spec: str) -> str:  # a width or fill alone keeps the short form: "{end:>5}" "    5"
        m = _FORMAT_SPEC.match(spec)
        if m and not m.group("type"):
            spec = spec.replace("#", "", 1) if m.group("alt") else spec  # (# keeps the zeros of .12g)
            spec += "g" if m.group("precision") else ".12g"
        return format(float(self), spec)


def format_row_id(row_id: str, recording: str, segment: int, start: float, end: float) -> str:
    """A segment row's id from the ``segments.row_id`` template: fields ``recording``, ``stem``
    (the recording id without folder and extension), ``segment`` (its place in the annotation),
    ``start`` and ``end`` (seconds; ``:g`` unless the template gives a spec). Raises
    ``ConfigError`` for a template naming another field or a spec that does not fit."""
    try:
        return row_id.format(recording=recording, stem=Path(str(recording)).stem, segment=segment,
                             start=_Seconds(start), end=_Seconds(end))
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
        raise ConfigError(f"segments.row_id {row_id!r}: {exc!r}; its fields are recording, stem, segment, start "
                          f"and end (seconds)") from None


def row_id(seg: dict) -> str:
    """The ``segments.row_id`` template of a ``segments`` section (:data:`DEFAULT_ROW_ID` for a
    bundle's config written before the key)."""
    return seg.get("row_id", DEFAULT_ROW_ID)


def _check_segment_rows(cfg: dict, where: str) -> None:
    """With ``segments.unit: segment`` the rows' labels are the segments' own: a train
    ``target_column(s)`` or ``target_from`` would not be read; ``segments.row_id`` formats (a test
    row's id) and is only set with ``unit: segment``. Nothing without segments. Raises ``ConfigError``."""
    if not cfg.get("segments"):
        return
    seg, unit, train = cfg["segments"], segment_unit(cfg), cfg["train"]
    if unit == "segment" and (train.get("target_column") or train.get("target_columns") or train.get("target_from")):
        raise ConfigError(f"{where} [train]: target_column(s) or target_from would not be read: with segments.unit "
                          f"segment every segment's labels are its own (segments.labels or label_column); remove them")
    if row_id(seg) != DEFAULT_ROW_ID and unit != "segment":
        raise ConfigError(f"{where} [segments]: row_id names segment rows, but the rows are recordings "
                          f"(unit {unit}): remove it")
    try:
        format_row_id(row_id(seg), "dir/rec.ogg", 0, 0.0, 5.0)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def segment_unit(cfg: dict) -> str | None:
    """What a row of ``folds.csv`` is when the competition has segments (:mod:`lib.data.segments`):
    ``segment`` (rows are segments with labels of their own) or ``recording`` (a recording's
    segments are the stretches its windows come from, their predictions aggregated by
    ``segments.aggregate``); ``None`` without segments."""
    seg = cfg.get("segments")
    if not seg:
        return None
    return seg["unit"] or ("segment" if seg["labels"] or seg["label_column"] else "recording")


def row_noun(cfg: dict) -> str:
    """What a row of ``folds.csv`` / ``test.csv`` is called in messages: ``segment`` when
    :func:`segment_unit` says rows are segments, else ``recording``."""
    return "segment" if segment_unit(cfg) == "segment" else "recording"


def _inputs_section(cfg: dict, where: str) -> None:
    """Check the ``matrix`` and ``segments`` sections against each other, the task and the audio
    section; fill ``segments.unit``. Raises ``ConfigError`` naming the file and key."""
    m, seg = cfg.get("matrix"), cfg.get("segments")
    if cfg["audio"].get("bad_test_files") == "silence" and (m or seg):  # a silent clip has no matrix or segments
        raise ConfigError(f"{where} [audio]: bad_test_files: silence is for competitions of whole audio files; "
                          f"this one has {'matrices' if m else 'segments'}")
    if m:
        if not m["frames_per_second"] and not (m["hop_length"] and m["sample_rate"]):
            raise ConfigError(f"{where} [matrix]: give the frame rate of the matrices: frames_per_second, or "
                              f"hop_length and sample_rate (the STFT that made them)")
        if m["frames_per_second"] and (m["hop_length"] or m["sample_rate"]):
            raise ConfigError(f"{where} [matrix]: give frames_per_second or hop_length and sample_rate, not both")
        for key in ("sample_rate", "channel"):
            if cfg["audio"][key] is not None:
                raise ConfigError(f"{where} [audio]: {key} is for audio files; this competition ships matrices "
                                  f"(matrix section)")
    if not seg:
        return
    w = f"{where} [segments]"
    if seg["format"] in ("icbhi", "json") and not seg["file"]:
        raise ConfigError(f"{w}: format {seg['format']} reads one annotation file per recording: set 'file', "
                          f"a path template such as \"{{id}}.txt\"")
    if seg["format"] == "csv" and not seg["csv"]:
        raise ConfigError(f"{w}: format csv reads one table: set 'csv'")
    icbhi = ("format icbhi has two 0/1 label columns after start and end: name them in 'labels' (e.g. "
             "[crackles, wheezes])")
    if seg["format"] == "icbhi" and seg["labels"] and len(seg["labels"]) != 2:  # none: cycles as regions only
        raise ConfigError(f"{w}: {icbhi}; got {seg['labels']}")
    if seg["labels"] and seg["label_column"]:
        raise ConfigError(f"{w}: give 'labels' (0/1 columns) or 'label_column' (the class), not both")
    if seg["format"] == "icbhi" and seg["label_column"]:
        raise ConfigError(f"{w}: format icbhi has no class column; its two 0/1 columns are 'labels'")
    if seg["units"] == "frames" and not m:
        raise ConfigError(f"{w}: units frames needs a matrix section (the frame rate of the rows' matrices)")
    own = bool(seg["labels"] or seg["label_column"])
    seg["unit"] = segment_unit(cfg)
    if seg["unit"] == "recording" and own:
        raise ConfigError(f"{w}: segments with labels of their own are the unit (unit: segment); "
                          f"unit: recording takes each recording's label")
    if seg["unit"] == "segment" and not own:
        raise ConfigError(f"{w}: unit segment needs the segments' labels ('labels' or 'label_column')"
                          + (f"; {icbhi}" if seg["format"] == "icbhi" else ""))
    if seg["unit"] == "segment" and cfg["task"] == "multilabel" and seg["label_column"]:
        raise ConfigError(f"{w}: a multi-label task takes its segments' labels from 0/1 'labels'")


def _split_section(sec: dict, where: str, labelled: bool) -> None:
    """Check a ``train``/``test`` section: rows from ``csv`` + ``id_column``, or from ``files``."""
    if not sec["csv"] and not sec["files"]:
        raise ConfigError(f"{where}: give 'csv' (a table of ids) or 'files' (a glob of audio files under data_dir)")
    if sec["csv"]:
        _require(sec, "id_column", where)
    elif sec["id_from"] not in ("name", "stem", "path"):
        raise ConfigError(f"{where}: id_from {sec['id_from']!r} is not one of name, stem, path")
    if labelled:
        sources = [k for k in ("target_column", "target_columns", "target_from") if sec[k]]
        if len(sources) != 1:
            raise ConfigError(f"{where}: give exactly one label source: target_column, target_columns "
                              f"(multi-label 0/1 columns) or target_from: folder; got {sources or 'none'}")
        if sec["target_from"] not in (None, "folder"):
            raise ConfigError(f"{where}: target_from {sec['target_from']!r} must be 'folder'")
        if not sec["csv"] and not sec["target_from"]:
            raise ConfigError(f"{where}: rows from 'files' have no label column; use target_from: folder")


def check_classes(cfg: dict, where: str) -> None:
    """Check ``classes`` against the task (binary: exactly two, and ``positive`` among them)."""
    classes = cfg["classes"]
    if twice := sorted({c for c in classes if classes.count(c) > 1}):
        raise ConfigError(f"{where}: classes lists {twice} more than once; give each class once")
    if len(classes) < 2:
        raise ConfigError(f"{where}: classes must be at least 2 distinct labels, got {classes}")
    if cfg["task"] == "binary":
        if len(classes) != 2:
            raise ConfigError(f"{where}: a binary task needs exactly 2 classes, got {classes}; "
                              f"use task: multiclass for more")
        pos = str(classes[1] if cfg.get("positive") is None else cfg["positive"])
        if pos not in classes:
            raise ConfigError(f"{where}: positive class {pos!r} is not in classes {classes}")
        cfg["positive"] = pos


def check_loaded(cfg, what: str, loader: str) -> None:
    """Raise ``ConfigError`` when ``cfg`` (an argument ``what`` of a stage function called from a
    notebook) is not a config dict: a path given where ``loader`` (e.g.
    ``lib.components.load_experiment``) has to read it first."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"{what}: a config as {loader}(path) returns it, not {cfg!r}")
