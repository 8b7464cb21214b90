"""The schemas of the two config files, as pydantic models: they only check (the configs stay
dicts); ``extra="forbid"`` makes every unknown key an error. :func:`validate` turns pydantic's
errors into one :class:`ConfigError` naming the file or ``--set`` override that set each bad
key, the dotted key, and for an unknown key the closest valid one."""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError
from .registry import did_you_mean

Positive = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Probability = Annotated[float, Field(ge=0, le=1)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _AudioPath(_Section):
    pattern: Optional[str] = None
    replace: Optional[str] = None
    template: Optional[str] = None


class _Split(_Section):
    csv: Optional[str] = None
    id_column: Optional[str] = None
    target_column: Optional[str] = None
    target_columns: Optional[list[str]] = None
    target_from: Optional[str] = None
    files: Optional[str] = None
    id_from: Optional[str] = None
    label_separator: Optional[str] = None
    audio: Optional[_AudioPath] = None


class _Audio(_Section):
    clip_seconds: Positive
    hop_seconds: Optional[Positive] = None
    aggregate: Optional[str] = None
    pad: Optional[str] = None
    sample_rate: Optional[Positive] = None
    resample_type: Optional[str] = None
    channel: Optional[NonNegativeInt] = None


class _Groups(_Section):
    column: Optional[str] = None
    regex: Optional[str] = None
    on: Literal["id", "path"] = "id"


class _Folds(_Section):
    n_folds: Annotated[int, Field(ge=2)] = 5
    scheme: Optional[str] = None
    seed: int = 42
    column: Optional[str] = None


class _Metadata(_Section):
    numeric: Optional[list[str]] = None
    categorical: Optional[list[str]] = None


class _Submission(_Section):
    sample: Optional[str] = None
    id_column: Optional[str] = None
    target_column: Optional[str] = None
    format: Optional[str] = None
    label_separator: Optional[str] = None


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


class _Ensemble(_Section):
    method: str = "best"
    temperature: Positive = 0.01


class Competition(_Section):
    name: str = ""
    data_dir: str = "input"
    task: str = "binary"
    classes: Optional[list[Any]] = None
    positive: Any = None
    metric: Optional[str] = None
    metrics: Optional[list[str]] = None
    custom_metrics: Optional[dict[str, _CustomMetric]] = None
    normal_class: Any = None
    train: _Split
    test: Optional[_Split] = None
    audio: _Audio
    groups: Optional[_Groups] = None
    folds: Optional[_Folds] = None
    metadata: Optional[_Metadata] = None
    submission: Optional[_Submission] = None
    decision: Optional[_Decision] = None
    ensemble: Optional[_Ensemble] = None
    experiments: Optional[list[str]] = None


class _Component(_Section):
    name: str
    params: Optional[dict[str, Any]] = None


class _Features(_Component):
    set: Optional[str] = None
    dtype: Literal["float32", "float16"] = "float32"


class _Inputs(_Section):
    audio_scalars: bool = True
    metadata: bool = True


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
    mixup: _Mix = _Mix()
    cutmix: _Mix = _Mix()
    spec_augment: _SpecAugment = _SpecAugment()


class _SWA(_Section):
    start: Probability = 0.75


class _Distill(_Section):
    weight: Annotated[float, Field(gt=0, le=1)] = 0.5


class _Train(_Section):
    epochs: PositiveInt = 25
    batch_size: PositiveInt = 64
    patience: PositiveInt = 8
    grad_clip: Positive = 5.0
    seed: NonNegativeInt = 42
    device: str = "auto"
    amp: bool = True
    folds: Optional[list[NonNegativeInt]] = None
    ema: Optional[Annotated[float, Field(gt=0, lt=1)]] = None
    swa: Optional[_SWA] = None
    distill: Optional[_Distill] = None
    class_weights: Optional[Literal["balanced"]] = None
    sampler: Optional[Literal["balanced"]] = None
    compile: bool = False
    max_bad_steps: PositiveInt = 5
    distributed: Literal["folds", "ddp"] = "folds"
    sync_bn: bool = False


class _TTA(_Section):
    shifts: list[float] = [0.0]
    hop_seconds: Optional[Positive] = None


class Experiment(_Section):
    name: str
    features: _Features
    frontend: Optional[_Component] = None
    model: _Component
    optimizer: _Component
    scheduler: _Component
    loss: _Component
    inputs: _Inputs = _Inputs()
    augment: _Augment = _Augment()
    tta: _TTA = _TTA()
    train: _Train = _Train()


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
            for part in err["loc"]:  # the part of the location that is a key in cfg (no union tags)
                if not (isinstance(node, dict) and part in node):
                    if err["type"] == "missing":
                        keys.append(part)
                    break
                keys.append(part)
                node = node[part]
            key = ".".join(map(str, keys))
            origin = source_of(sources, keys, where)
            if err["type"] == "extra_forbidden":
                problems[key] = f"unknown key {key!r} in {origin}{did_you_mean(key, valid_keys(schema))}"
            elif err["type"] == "missing":
                problems[key] = f"{origin}: missing required key {key!r}"
            elif err["type"] in ("model_type", "dict_type"):
                problems[key] = f"{origin}: {key} must be a mapping, got {node!r}"
            else:
                problems.setdefault(key, f"{origin}: {key}: {err['msg'].lower()}, got {node!r}")
        raise ConfigError("\n".join(problems.values())) from None


def source_of(sources: list[tuple[str, dict]], keys, default: str) -> str:
    """The label of the last source (file or override) that sets the dotted path ``keys``, else ``default``."""
    for label, raw in reversed(sources):
        node = raw
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                break
            node = node[key]
        else:
            return label
    return default
