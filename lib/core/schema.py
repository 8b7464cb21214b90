"""The schemas of the two config files, as pydantic models, and the one source of their
defaults. They check and fill; the configs stay dicts: :func:`fill_defaults` inserts every
missing key with the default written here (a default that depends on other keys, e.g. the
metric on the task, is said in a comment and filled by :mod:`lib.core.config`);
``extra="forbid"`` makes every unknown key an error, and :func:`validate` turns pydantic's
errors into one :class:`ConfigError` naming the file or ``--set`` override that set each bad
key, the dotted key, and for an unknown key the closest valid one."""
from __future__ import annotations

import copy
import difflib
import re
import types
from typing import Annotated, Any, Literal, Optional, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from .errors import ConfigError
from .registry import did_you_mean

SAMPLERS = ("balanced", "balanced_slices")
"""``train.sampler``'s values besides null (:func:`lib.training.loop.epoch_recordings` draws them)."""

SUBMISSION_FORMATS = ("label", "probability", "probabilities", "indicators")
"""``submission.format``'s values (:func:`lib.evaluation.ensemble.make_submission` writes them)."""

Positive = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Probability = Annotated[float, Field(ge=0, le=1)]
EpochFraction = Annotated[float, Field(gt=0, lt=1)]
"""A number of epochs given as a fraction of ``train.epochs`` (rounded up)."""
NonNegative = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]
"""A share that must leave something of what it scales: dropout, label smoothing, momentum."""
OpenUnit = Annotated[float, Field(gt=0, lt=1)]
UpToOne = Annotated[float, Field(gt=0, le=1)]
Channels = Annotated[list[PositiveInt], Field(min_length=1)]
Device = Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$", description="auto, cpu, cuda or cuda:N")]
"""The devices :func:`lib.core.device.get_device` is given: ``auto`` (CUDA when available), ``cpu``,
``cuda`` or ``cuda:N`` (the N-th GPU)."""


def _compiles(text: str) -> str:
    """A value that must be a Python regular expression; pydantic reports the ``ValueError``."""
    try:
        re.compile(text)
    except re.error as e:
        raise ValueError(f"not a valid regular expression ({e})") from None
    return text


Regex = Annotated[str, AfterValidator(_compiles)]
"""A Python regular expression (``re`` syntax), checked when the config is read."""


def _whole(value: float) -> float:
    """A number of Hz that must be whole (16000, 16000.0, 16e3); pydantic reports the ``ValueError``."""
    if value != int(value):
        raise ValueError("a whole number of Hz expected")
    return value


WholeHz = Annotated[float, Field(gt=0), AfterValidator(_whole)]
"""A sample rate: a whole number of Hz > 0, written as an integer or a float (``16e3``); the
config reader stores it as an int."""


def _low_high(pair: list) -> list:
    """A ``[low, high]`` range; pydantic reports the ``ValueError`` when low > high."""
    if pair[0] > pair[1]:
        raise ValueError("[low, high] with low <= high expected")
    return pair


PositiveRange = Annotated[list[Positive], Field(min_length=2, max_length=2), AfterValidator(_low_high)]
"""``[low, high]``, both positive, low <= high."""


def _distinct(items: list) -> list:
    """A list whose items are all different; pydantic reports the ``ValueError`` naming repeats."""
    repeated = sorted({x for x in items if items.count(x) > 1})
    if repeated:
        raise ValueError(f"each value once expected; repeated: {repeated}")
    return items


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _AudioPath(_Section):
    pattern: Optional[Regex] = None
    replace: Optional[str] = None
    template: str = "{id}"


class _Split(_Section):
    csv: Optional[str] = None
    id_column: Optional[str] = None
    target_column: Optional[str] = None
    target_columns: Optional[list[str]] = None
    target_from: Optional[str] = None
    files: Optional[str] = None
    id_from: str = "name"
    label_separator: str = " "
    audio: _AudioPath = _AudioPath()


class _Audio(_Section):
    clip_seconds: Positive
    hop_seconds: Optional[Positive] = None
    aggregate: str = "mean"
    pad: str = "zero"
    sample_rate: Optional[WholeHz] = None
    resample_type: str = "soxr_hq"
    channel: Optional[NonNegativeInt] = None
    bad_test_files: Literal["error", "silence"] = "error"


class _Groups(_Section):
    column: Optional[str] = None
    regex: Optional[Regex] = None
    on: Literal["id", "path"] = "id"
    test: bool = False  # give test.csv's rows their groups too (inputs.group_norm; decision.group_aggregate does)


class _Folds(_Section):
    n_folds: Optional[Annotated[int, Field(ge=2)]] = None  # default 5; with a column: its number of values
    scheme: Optional[str] = None  # default: predefined with a column, else (multilabel_)stratified(_group)
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 42  # scikit-learn's random_state range
    column: Optional[str] = None
    stratify_by: list[str] = []  # training-CSV columns balanced across folds with the label


class _Metadata(_Section):
    numeric: Optional[list[str]] = []
    categorical: Optional[list[str]] = []


class _Submission(_Section):
    sample: Optional[str] = None
    id_column: Optional[str] = None
    target_column: Optional[str] = None
    format: Literal[SUBMISSION_FORMATS] = "label"
    label_separator: Optional[str] = None  # default: train.label_separator
    unit: Literal["row", "group"] = "row"  # group: one submission row per group (a patient), ids = group values


class _CustomMetric(_Section):
    function: str
    higher_is_better: bool = True
    uses: Literal["labels", "probs"] = "probs"


class _Mask(_Section):
    where: str
    classes: list[Any]


class _Decision(_Section):
    threshold: Union[Literal["auto"], Probability, list[Probability]] = "auto"
    class_bias: bool = False
    mask: list[_Mask] = []
    group_aggregate: Optional[Literal["mean", "vote"]] = None
    slice_prior: Optional[str] = None  # a column of slices: probabilities shifted to the pooled class ratio per value


class _Ensemble(_Section):
    method: str = "best"
    temperature: Positive = 0.01


class _Matrix(_Section):
    """The rows' files are precomputed matrices (e.g. mel-spectrogram tables), not audio."""
    n_bins: PositiveInt  # rows of a bins-first table (128 for MAIC's mel tables)
    axes: Literal["bins_frames", "frames_bins"] = "bins_frames"  # the file's axis order
    frames_per_second: Optional[Positive] = None  # or hop_length and sample_rate
    hop_length: Optional[PositiveInt] = None
    sample_rate: Optional[Positive] = None
    format: Optional[Literal["csv", "tsv", "npy", "npz"]] = None  # default: the file's extension
    key: Optional[str] = None  # npz: the array's name (default: the only one)
    header: bool = False  # csv/tsv: the first line names the columns


DEFAULT_ROW_ID = "{recording}#{segment}"
"""A segment row's id unless ``segments.row_id`` says otherwise (:func:`lib.core.config.row_id`)."""


class _Segments(_Section):
    """Segments of each recording (cycles, tokens) from an annotation source."""
    format: Literal["icbhi", "json", "csv"]
    file: Optional[str] = None  # icbhi/json: per-recording annotation path, a template over the row ("{id}.txt")
    csv: Optional[str] = None  # csv: one table for every recording of both splits
    id_column: str = "id"  # csv: the recording id column
    units: Literal["seconds", "frames"] = "seconds"
    key: Optional[str] = None  # json: dotted path to the list of intervals (none: the document is the list)
    start: str = "start"  # json key / csv column of the start
    end: str = "end"
    skip: Optional[str] = None  # json key / csv column of a flag: segments with a true flag are left out (counted)
    labels: list[str] = []  # own 0/1 label columns or keys (icbhi: its two columns' names); []: the recording's label
    label_column: Optional[str] = None  # csv/json: a column or key holding the segment's class
    none_label: str = "normal"  # the class of a segment whose 0/1 labels are all 0
    unit: Optional[Literal["segment", "recording"]] = None  # default: segment with own labels, else recording
    aggregate: Literal["mean", "max", "vote"] = "mean"  # segments -> recording (unit: recording)
    min_seconds: NonNegative = 0.0  # shorter segments are errors (0: only empty ones)
    row_id: str = DEFAULT_ROW_ID  # unit: segment: a row's id; fields recording, stem, segment, start, end


class _Subdivide(_Section):
    """Train on finer classes (class x metadata values), merge their probabilities back."""
    by: Annotated[list[str], Field(min_length=1)]  # metadata columns
    bands: dict[str, Annotated[list[float], Field(min_length=1)]] = {}  # numeric column -> band edges
    mask: bool = False  # predict each row over the fine classes of its own metadata values only


class Competition(_Section):
    name: Optional[str] = None  # default: the file's stem
    data_dir: str = "input"
    task: str = "binary"
    classes: Optional[list[Any]] = None  # default: target_columns, else the labels found by stage 00
    positive: Any = None  # default (binary): the second class
    metric: Optional[str] = None  # default: average_precision for multilabel, else accuracy
    metrics: Optional[list[str]] = None  # default: [metric]; metric is always among them
    custom_metrics: Optional[dict[str, _CustomMetric]] = None
    normal_class: Any = None
    train: _Split
    test: Optional[_Split] = None
    audio: _Audio
    matrix: Optional[_Matrix] = None  # the files are precomputed matrices, not audio
    segments: Optional[_Segments] = None
    subdivide: Optional[_Subdivide] = None
    groups: Optional[_Groups] = None
    slices: list[str] = []  # training-CSV columns scored separately (e.g. database, device)
    folds: _Folds = _Folds()
    metadata: _Metadata = _Metadata()
    submission: Optional[_Submission] = None
    decision: _Decision = _Decision()
    ensemble: _Ensemble = _Ensemble()
    experiments: Optional[list[str]] = None


class _Component(_Section):
    name: str
    params: Optional[dict[str, Any]] = {}


def _folder_name(text: str) -> str:
    """A name that becomes one folder under the output folder; pydantic reports the ``ValueError``."""
    if not re.fullmatch(r"[^/\\\x00-\x1f.][^/\\\x00-\x1f]*", text):
        raise ValueError("one folder name expected (no '/' or '\\', not starting with '.'): it names "
                         "a folder or file under the output folder")
    return text


FolderName = Annotated[str, AfterValidator(_folder_name)]


def check_folder_name(text: str, where: str) -> None:
    """Raise ``ConfigError`` naming ``where`` (e.g. ``--name``) when ``text`` is not one folder name
    (the check of ``features.set`` and ``name`` in a config)."""
    try:
        _folder_name(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}, got {text!r}") from None


class _Features(_Component):
    set: Optional[FolderName] = None  # default: the feature set's name (a folder under output/features/)
    dtype: Literal["float32", "float16"] = "float32"


class _Inputs(_Section):
    audio_scalars: bool = True
    metadata: bool = True
    group_norm: bool = False  # each band's mean over the row's group (in its split) removed: lib.inputs.base


class _Mix(_Section):
    p: Probability = 0.0
    alpha: Positive = 1.0


class _SpecAugment(_Section):
    p: Probability = 0.0
    freq_mask: NonNegativeInt = 8
    time_mask: NonNegativeInt = 8
    n_masks: NonNegativeInt = 1


class _Augment(_Section):
    waveform: list[_Component] = []
    mixup: _Mix = _Mix(alpha=0.4)
    cutmix: _Mix = _Mix()
    spec_augment: _SpecAugment = _SpecAugment()


class _SWA(_Section):
    start: Probability = 0.75


class _Distill(_Section):
    weight: Annotated[float, Field(gt=0, le=1)] = 0.5


class _SupCon(_Section):
    # the auxiliary loss's weight beside the classification loss (above 10 it is the whole loss)
    weight: Annotated[float, Field(gt=0, le=10)] = 0.1
    temperature: UpToOne = 0.1  # Khosla et al. 2020 use 0.07-0.1; above 1 every pair looks alike


class _Train(_Section):
    epochs: PositiveInt = 25
    batch_size: PositiveInt = 64
    patience: Union[PositiveInt, EpochFraction] = 8
    min_epochs: Union[NonNegativeInt, EpochFraction] = 0.5
    smooth_epochs: PositiveInt = 3
    monitor: Optional[str] = None  # the metric early stopping and the best epoch follow (default: the competition's)
    grad_clip: Positive = 5.0
    seed: NonNegativeInt = 42
    device: Device = "auto"
    amp: bool = True
    folds: Optional[Annotated[list[NonNegativeInt], Field(min_length=1), AfterValidator(_distinct)]] = None
    ema: Optional[Annotated[float, Field(gt=0, lt=1)]] = None
    swa: Optional[_SWA] = None
    distill: Optional[_Distill] = None
    supcon: Optional[_SupCon] = None
    class_weights: Optional[Literal["balanced"]] = None
    sampler: Optional[Literal[SAMPLERS]] = None  # lib.training.loop.epoch_recordings
    epoch_repeats: PositiveInt = 1  # windows drawn per training recording and epoch (timm's --epoch-repeats)
    compile: bool = False
    max_bad_steps: PositiveInt = 5
    distributed: Literal["folds", "ddp"] = "folds"
    sync_bn: bool = False


class _TTA(_Section):
    shifts: list[float] = [0.0]
    hop_seconds: Optional[Positive] = None


class _Pretrain(_Section):
    """Self-supervised pretraining of the experiment's network (``pretrain.py``; docs/self-supervised.md)."""
    method: Literal["byol_a", "simclr"] = "byol_a"
    epochs: PositiveInt = 20
    batch_size: Annotated[int, Field(ge=2)] = 64
    lr: Positive = 3.0e-4  # BYOL-A's Adam learning rate (Niizumi et al. 2021)
    crop_seconds: Optional[Positive] = None  # default: the competition's audio.clip_seconds
    splits: Annotated[list[Literal["train", "test"]], Field(min_length=1)] = ["train", "test"]  # audio only, no labels
    extra_audio: list[str] = []  # folders of unlabelled audio files (waveform feature sets only)
    ema: OpenUnit = 0.99  # the BYOL target's EMA decay
    projector_hidden: PositiveInt = 4096
    projector_dim: PositiveInt = 256
    predictor_hidden: PositiveInt = 4096
    mixup: Fraction = 0.4  # BYOL-A's mixup ratio: the background's share is uniform in [0, mixup)
    crop_scale: PositiveRange = [0.6, 1.5]  # random resize crop
    temperature: Positive = 0.1  # simclr's NT-Xent temperature
    experiment_augment: bool = True  # also the experiment's augment.waveform and augment.spec_augment
    seed: NonNegativeInt = 0


class Experiment(_Section):
    name: FolderName  # default: the file's stem
    features: _Features = _Features(name="log_mel")
    frontend: Optional[_Component] = None
    model: _Component = _Component(name="cnn")
    optimizer: _Component = _Component(name="adamw", params={"lr": 1e-3, "weight_decay": 1e-2})
    scheduler: _Component = _Component(name="warmup_cosine", params={"warmup_epochs": 1})
    loss: _Component = _Component(name="auto")
    inputs: _Inputs = _Inputs()
    augment: _Augment = _Augment()
    tta: _TTA = _TTA()
    train: _Train = _Train()
    pretrain: _Pretrain = _Pretrain()  # read by pretrain.py only; not part of the training key


COMPONENTS = ("features", "frontend", "model", "optimizer", "scheduler", "loss")
"""The experiment's component sections: ``{name, params}``, each resolved through a registry
(:data:`lib.components.SECTIONS`); a config naming another component than the one it inherits
replaces the section whole."""

PARAM_RANGES: dict[str, dict[str, Any]] = {
    "model": {"dropout": Fraction, "drop_rate": Fraction, "drop_path_rate": Fraction,
              "channels": Channels, "widths": Channels, "convs": Channels, "blocks": Channels,
              "wavenet.channels": PositiveInt, "wavenet.blocks": PositiveInt,  # one width, one count there
              "head_hidden": PositiveInt | list[PositiveInt],
              "convs_per_block": PositiveInt, "stem_channels": PositiveInt, "stem_stride": PositiveInt,
              "layers": PositiveInt, "skip_channels": PositiveInt, "kernel_size": PositiveInt, "depth": PositiveInt,
              "freeze_blocks": NonNegativeInt, "backbone_lr": Positive, "layer_decay": UpToOne,
              "learning_rate": Positive, "max_iter": PositiveInt, "max_leaf_nodes": Annotated[int, Field(ge=2)],
              "min_samples_leaf": PositiveInt, "l2_regularization": NonNegative, "max_features": UpToOne,
              "C": Positive},
    "optimizer": {"lr": Positive, "weight_decay": NonNegative, "momentum": Fraction, "dampening": Probability,
                  "eps": Positive, "betas": Annotated[list[Fraction], Field(min_length=2, max_length=2)]},
    "scheduler": {"warmup_epochs": NonNegative, "min_lr_ratio": Probability, "pct_start": OpenUnit,
                  "div_factor": Positive, "final_div_factor": Positive, "factor": OpenUnit,
                  "patience": NonNegativeInt, "min_lr": NonNegative, "threshold": NonNegative},
    "loss": {"label_smoothing": Fraction, "gamma": NonNegative, "alpha": Probability | list[Probability]},
    "features": {"n_mels": PositiveInt, "n_fft": PositiveInt, "hop_length": PositiveInt, "n_mfcc": PositiveInt,
                 "fmin": NonNegative, "fmax": Positive, "power": Positive, "mel_power": Positive, "top_db": Positive,
                 "sample_rate": PositiveInt, "gain": NonNegative, "bias": NonNegative, "time_constant": Positive,
                 "eps": Positive, "input_scale": Positive},
    "augment.waveform": {"p": Probability, "mixup.alpha": Positive, "max_seconds": NonNegative,
                         "min_rate": Positive, "max_rate": Positive, "q": Positive, "width": Positive,
                         "n_bands": PositiveInt, "min_hz": Positive, "max_hz": Positive, "eq.max_db": NonNegative},
}
"""The allowed values of component parameters (the free ``params`` mappings, which the component
takes as keyword arguments), by section and by parameter name, or ``"<component>.<name>"`` where
one component's parameter means something else (``mixup.alpha``: a Beta distribution's
concentration). ``frontend`` shares the ``features`` table. Checked when a config is loaded
(:func:`param_problem`, called by :func:`lib.components.check_experiment`); a parameter not
listed here is checked for its type only."""


def param_problem(section: str, component: str, name: str, value) -> str | None:
    """What is wrong with ``value`` of the parameter ``name`` of ``component`` in ``section``
    (``model``, ``loss``, ``augment.waveform``, ...) by :data:`PARAM_RANGES`: ``"must be <what is
    allowed>"``, or ``None`` when it is allowed, unlisted, or ``None`` (a parameter's "off"; its
    type is the signature check's)."""
    table = PARAM_RANGES.get("features" if section == "frontend" else section, {})
    ann = table.get(f"{component}.{name}", table.get(name))
    if ann is None or value is None:
        return None
    try:
        TypeAdapter(ann).validate_python(value, strict=True)
    except ValidationError:
        return f"must be {describe(ann)}"
    return None


def describe(ann) -> str:
    """The values a schema annotation allows, in words: ``"a number in [0, 1)"``, ``"an integer
    > 0"``, ``"a list of 2 to 2 items, each a number in [0, 1)"``, ``"one of 'a', 'b'"``, joined by
    ``or`` for a union. A ``Field(description=...)`` replaces the words of what it annotates."""
    origin, args = get_origin(ann), get_args(ann)
    if origin is Annotated:
        base, meta = args[0], [m for info in args[1:] for m in getattr(info, "metadata", [info])]
        said = [info.description for info in args[1:] if getattr(info, "description", None)]
        if said:
            return said[0]
        b = {k: getattr(m, k) for m in meta for k in ("gt", "ge", "lt", "le", "min_length", "max_length")
             if getattr(m, k, None) is not None}
        if get_origin(base) is list:
            n, m = b.get("min_length", 0), b.get("max_length")
            size = f" of {n} items" if n == m else f" of {n} to {m} items" if m else f" of at least {n} item(s)" if n else ""
            return f"a list{size}, each {describe(get_args(base)[0])}"
        what = {int: "an integer", float: "a number", str: "text"}.get(base, getattr(base, "__name__", str(base)))
        lo = next(((k, b[k]) for k in ("ge", "gt") if k in b), None)
        hi = next(((k, b[k]) for k in ("le", "lt") if k in b), None)
        if lo and hi:
            return f"{what} in {'[' if lo[0] == 'ge' else '('}{lo[1]}, {hi[1]}{']' if hi[0] == 'le' else ')'}"
        sign = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
        return f"{what} {sign[(lo or hi)[0]]} {(lo or hi)[1]}" if lo or hi else what
    if origin is Union or origin is types.UnionType:
        return " or ".join(dict.fromkeys(describe(a) for a in args))
    if origin is list:
        return f"a list, each {describe(args[0])}" if args else "a list"
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if ann is Any:
        return "any value"
    if ann is type(None):
        return "null"
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "text", bool: "true or false"}.get(ann, str(ann))


def _section_type(annotation) -> tuple[type[BaseModel] | None, str]:
    """The section model inside a field's annotation and how it holds it: ``(model, "one")``,
    ``(model, "list")`` (a list of sections), ``(model, "dict")`` (a mapping of names to
    sections), or ``(None, "")`` for a plain value."""
    stack = [annotation]
    while stack:
        ann = stack.pop()
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            return ann, "one"
        origin, args = get_origin(ann), [a for a in get_args(ann) if a is not type(None)]
        if origin is list and args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
            return args[0], "list"
        if origin is dict and len(args) == 2 and isinstance(args[1], type) and issubclass(args[1], BaseModel):
            return args[1], "dict"
        stack += args
    return None, ""


def fill_defaults(schema: type[BaseModel], cfg: dict) -> dict:
    """Insert into ``cfg`` (in place) every key of ``schema`` that it lacks, with the schema's
    default (a section's default as a plain dict), and recursively into the sections it gives
    as mappings (also in lists and name -> section mappings). Required keys are left for
    :func:`validate` to report, values of the wrong type for it to name. Returns ``cfg``."""
    for name, field in schema.model_fields.items():
        if name not in cfg and not field.is_required():
            default = field.get_default(call_default_factory=True)
            cfg[name] = default.model_dump() if isinstance(default, BaseModel) else copy.deepcopy(default)
        section, how = _section_type(field.annotation)
        value = cfg.get(name)
        if section is None or value is None:
            continue
        items = {"one": [value], "list": value if isinstance(value, list) else [],
                 "dict": list(value.values()) if isinstance(value, dict) else []}[how]
        for item in items:
            if isinstance(item, dict):
                fill_defaults(section, item)
    return cfg


def valid_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every valid dotted key of a schema (``train``, ``train.epochs``, ...)."""
    out = []
    for name, field in model.model_fields.items():
        out.append(prefix + name)
        stack = [field.annotation]
        while stack:
            ann = stack.pop()
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                out += valid_keys(ann, f"{prefix}{name}.")
            else:
                stack += [a for a in get_args(ann) if a is not type(None)]
    return out


def _unknown_key_hint(plain: str, valid: list[str]) -> str:
    """For an unknown dotted key: the closest key of its own section by its last part
    (``augment.mixup.alhpa``: ``alpha``), else the closest key nested deeper in that section
    (``train.swa_start``: ``train.swa.start``), else the section's keys (``train.swa.begin``:
    ``train.swa takes start``); a top-level key: the closest over ``valid``."""
    parent, _, leaf = plain.rpartition(".")
    siblings = [k for k in valid if parent and k.rpartition(".")[0] == parent]
    whole = did_you_mean(plain, valid)
    if not siblings or "looks the same" in whole:  # (a stray space: said as such)
        return whole
    close = difflib.get_close_matches(leaf, [k.rpartition(".")[2] for k in siblings], n=1)
    deeper = difflib.get_close_matches(leaf, [k[len(parent) + 1:] for k in valid  # (swa_start: swa.start)
                                              if k.startswith(parent + ".") and k not in siblings], n=1)
    found = close or deeper
    return (did_you_mean(f"{parent}.{found[0]}", valid) if found
            else f"; {parent} takes {', '.join(k.rpartition('.')[2] for k in siblings)}")


def validate(schema: type[BaseModel], cfg: dict, sources: list[tuple[str, dict]], where: str) -> None:
    """Check ``cfg`` against ``schema``; raise one ``ConfigError`` listing every problem, each
    naming the file or override that set the key (:func:`source_of`), the dotted key, and for an
    unknown key the closest valid one."""
    try:
        schema.model_validate(cfg)
    except ValidationError as exc:
        problems = {}
        for err in exc.errors():
            keys, node = [], cfg
            for part in err["loc"]:  # the part of the location that is a key or index in cfg (no union tags)
                if not _holds(node, part):
                    if err["type"] == "missing":
                        keys.append(part)
                    break
                keys.append(part)
                node = node[part]
            key = dotted(keys)
            in_section = err["type"] == "missing" and len(keys) > 1
            origin = source_of(sources, keys[:-1] if in_section else keys, where)  # a missing key: who wrote its section or entry
            if err["type"] == "extra_forbidden":
                plain = ".".join(str(k) for k in keys if not isinstance(k, int))  # what valid_keys lists
                problems[key] = f"unknown key {key!r} in {origin}{_unknown_key_hint(plain, valid_keys(schema))}"
            elif err["type"] == "missing":
                problems[key] = f"{origin}: missing required key {key!r}"
            elif err["type"] in ("model_type", "dict_type"):
                problems[key] = f"{origin}: {key} must be a mapping, got {node!r}"
            elif err["type"] == "value_error":  # a check of ours (e.g. Regex): its own words
                problems[key] = f"{origin}: {key}: {err['ctx']['error']}, got {node!r}"
            else:
                ann = annotation_at(schema, keys) or annotation_at(schema, keys[:-1])  # an item: its list
                plain_literal = get_origin(ann) is Literal  # the message lists its values already
                allowed = "" if ann is None or plain_literal else f" (allowed: {describe(ann)})"
                problems.setdefault(key, f"{origin}: {key}: {err['msg'].lower()}, got {node!r}{allowed}")
        raise ConfigError("\n".join(problems.values())) from None


def annotation_at(schema: type[BaseModel], keys: list) -> Any:
    """The annotation of the field at the path ``keys`` of ``schema`` (through sections, and
    lists and mappings of sections by an index or name), or ``None`` when the path leads to no field."""
    model, ann, item = schema, None, False
    for key in keys:
        if item:  # a list's index or a mapping's name: into its section
            item = False
            continue
        if model is None or key not in model.model_fields:
            return None
        field = model.model_fields[key]
        ann = field.annotation
        for meta in field.metadata:  # constraints pydantic moved off an Annotated type
            ann = Annotated[ann, meta]
        if field.description:
            ann = Annotated[ann, Field(description=field.description)]
        model, how = _section_type(ann)
        item = how in ("list", "dict")  # the next key is an index or a name: no field of its own
    return ann


def _holds(node, key) -> bool:
    """Whether ``node[key]`` exists: a mapping's key or a list's index."""
    if isinstance(node, list):
        return isinstance(key, int) and 0 <= key < len(node)
    return isinstance(node, dict) and key in node


def dotted(keys) -> str:
    """A config path as its users write it: ``augment.waveform[1].params`` (list indices in brackets)."""
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in keys).lstrip(".")


def source_of(sources: list[tuple[str, dict]], keys, default: str) -> str:
    """The label of the last source (file or override) that sets the path ``keys`` (keys and list
    indices), else ``default``."""
    for label, raw in reversed(sources):
        node = raw
        for key in keys:
            if not _holds(node, key):
                break
            node = node[key]
        else:
            return label
    return default


NOT_FOR_CLASSICAL = ("optimizer", "scheduler", "loss", "augment", "pretrain", "train.epochs", "train.batch_size",
                     "train.patience", "train.min_epochs", "train.smooth_epochs", "train.monitor", "train.grad_clip",
                     "train.amp", "train.ema", "train.swa", "train.epoch_repeats", "train.compile",
                     "train.max_bad_steps", "train.sync_bn", "train.sampler", "train.supcon", "train.distill",
                     "tta.shifts")
"""Settings a scikit-learn member (``hgb``, ``logreg``: one fit per fold) has no use for; refused
in its own config file (docs/zoo.md); a run's ``--set`` of them is passed over, said once
(:func:`lib.cli.experiment`). ``tta.shifts``: its statistics over time do not change when the
frames are rolled (``tta.hop_seconds``, the windows of a long recording, applies)."""


def under(key: str, prefixes) -> bool:
    """Whether the dotted ``key`` is one of ``prefixes`` or lies under one (``train.swa.start`` under ``train.swa``)."""
    return any(key == p or key.startswith(p + ".") for p in prefixes)
