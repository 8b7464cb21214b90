"""Which config section is looked up in which registry, and the checks of component names and
parameters: one layer above the components (the registries of :mod:`lib.features`,
:mod:`lib.models`, :mod:`lib.training`, :mod:`lib.evaluation`), so that none of them imports
back down into the config code. The stages load configs through here:
:func:`load_experiment` and :func:`load_competition` read a file with :mod:`lib.core.config`
(schema, defaults) and then check every name and parameter against the registries, before any
work starts.
"""
from __future__ import annotations

import inspect
from pathlib import Path

from .core.config import read_competition, read_experiment, variant_name
from .core.errors import ConfigError
from .core.registry import Registry, did_you_mean
from .core.schema import NOT_FOR_CLASSICAL, dotted, param_problem, source_of, under
from .data.audio import PAD_MODES, RESAMPLERS
from .data.folds import SCHEMES
from .data import tasks
from .evaluation.blending import METHODS
from .evaluation.metrics import get_metric, load_custom
from .features import FEATURES
from .inputs import INPUT_KINDS
from .models import MODELS, is_classical, owns_frontend
from .models.frontend import FRONTENDS
from .models.heads import POOLINGS
from .models.pretrained_weights import split_params, takes_generic, transfer_options
from .training.losses import LOSSES
from .training.optim import OPTIMIZERS, SCHEDULERS
from .training.wave_augment import WAVE_AUGMENTS

SECTIONS: dict[str, Registry] = {"features": FEATURES, "frontend": FRONTENDS, "model": MODELS,
                                 "optimizer": OPTIMIZERS, "scheduler": SCHEDULERS, "loss": LOSSES}
"""An experiment's component section -> the registry its ``name`` is looked up in (``loss:
auto`` is ``bce`` or ``ce`` by task). The entries of ``augment.waveform`` are looked up in
:data:`lib.training.wave_augment.WAVE_AUGMENTS`."""

CODE_SUPPLIED = {"model": {"in_channels", "n_scalars", "n_outputs", "n_bins", "sample_rate"}, "optimizer": {"params"},
                 "scheduler": {"optimizer", "steps_per_epoch", "epochs"}, "loss": {"class_weight", "softmax"},
                 "frontend": {"sample_rate"}, "augment.waveform": {"sample_rate"}}
"""Arguments the code passes to a component (lib.models.build_model, lib.training.loop,
lib.training.losses.build_loss, lib.training.wave_augment.WaveAugmenter): not settable under
``params``; a sample rate is always the data's, and the focal loss's ``softmax`` follows the
task's outputs (softmax for multiclass, sigmoid otherwise)."""
_PLAIN_TYPES = {"int": int, "float": float, "bool": bool, "str": str}
_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "text"}


def load_experiment(path: str | Path, overrides: list[str] | None = None, comp: dict | None = None,
                    name_variant: bool = True) -> dict:
    """Load an experiment config: :func:`lib.core.config.read_experiment` (``base:`` chain,
    ``--set`` ``overrides``, every default, the schema), then :func:`check_experiment` (against
    the prepared competition ``comp`` too, when given). Returns the config dict (keys ``name,
    features, frontend, model, optimizer, scheduler, loss, inputs, augment, tta, train``).
    ``name_variant`` (as a notebook wants it): the overrides resolved as the stages resolve them
    (:func:`resolve_experiment`: those a scikit-learn member has no use for passed over) and
    ``name`` the variant they make (:func:`lib.core.config.variant_name`, as ``--set`` names a
    run), so that a notebook's run is the stages' run and never replaces the base experiment's
    models; else every override applied and ``name`` the config's own.
    Raises ``ConfigError`` naming the file (or override) and the key for anything wrong."""
    if not name_variant:
        cfg, sources = read_experiment(path, overrides)
        check_experiment(cfg, str(path), sources, comp)
        return cfg
    cfg, applied, _ = resolve_experiment(path, overrides, comp)
    cfg["name"] = variant_name(cfg["name"], applied)
    return cfg


def resolve_experiment(path: str | Path, overrides: list[str] | None = None, comp: dict | None = None
                       ) -> tuple[dict, list[str], list[str]]:
    """The experiment config as a run of ``--set`` ``overrides`` trains it: ``(cfg with the config's
    own name, the overrides applied, the keys passed over)``. A run's overrides that a scikit-learn
    member has no use for (``train.epochs``, ``scheduler.params.factor`` ...: ``NOT_FOR_CLASSICAL``,
    given to every member of ``run_all.sh --set``) are decided without, then passed over: not
    applied, not in the name. Raises ``ConfigError`` as :func:`load_experiment` does."""
    overrides = overrides or []
    keep = [o for o in overrides if not under(o.partition("=")[0].strip(), NOT_FOR_CLASSICAL)]
    if len(keep) < len(overrides):
        try:
            cfg = load_experiment(path, keep, comp, name_variant=False)
        except ConfigError:  # (kept overrides valid only with the others: a network's, as below)
            cfg = None
        if cfg is not None and is_classical(cfg["model"]):
            return cfg, keep, [o.partition("=")[0].strip() for o in overrides if o not in keep]
    return load_experiment(path, overrides, comp, name_variant=False), overrides, []


def load_competition(path: str | Path, data_dir: str | Path | None = None) -> dict:
    """Load a competition config: :func:`lib.core.config.read_competition` (every default, the
    schema, ``data_dir`` resolved; ``data_dir`` overrides the file's), then
    :func:`check_competition`. Returns the config dict (``docs/competition.md`` lists every
    key). Raises ``ConfigError`` naming the file and the missing, unknown or wrong key, an
    unknown metric, fold scheme or ensembling method."""
    cfg, where = read_competition(path, data_dir)
    check_competition(cfg, Path(path), where)
    return cfg


def check_competition(cfg: dict, path: Path, where: str) -> None:
    """Check a competition config's registered names: ``custom_metrics`` loaded (their files
    resolved against the config's folder ``path.parent``), every metric known and defined for the
    task and classes (:func:`lib.evaluation.metrics.get_metric`), the ensembling method, the
    audio ``resample_type`` and ``pad``, the fold ``scheme``. Raises ``ConfigError`` naming the
    file and key."""
    for name, spec in (cfg.get("custom_metrics") or {}).items():
        file, _, func = spec["function"].rpartition(":")
        spec["function"] = f"{(path.parent / file).resolve()}:{func}" if file else spec["function"]
        load_custom(name, spec, f"{where} [custom_metrics]")  # even one that no metric uses yet
    for name in cfg["metrics"]:  # also each metric's own check (normal_class, the 2022 challenge's class names)
        get_metric(name, cfg, f"{where} (metric/metrics)")
    method = cfg["ensemble"]["method"]
    if method not in METHODS:
        raise ConfigError(f"{where} [ensemble]: method {method!r} is not one of {', '.join(METHODS)}"
                          f"{did_you_mean(method, METHODS)}")
    audio = cfg["audio"]
    for key, allowed in (("resample_type", RESAMPLERS), ("pad", PAD_MODES)):
        if audio[key] not in allowed:
            raise ConfigError(f"{where} [audio]: {key} {audio[key]!r} is not one of {allowed}")
    scheme = cfg["folds"]["scheme"]
    if scheme not in SCHEMES:
        raise ConfigError(f"{where} [folds]: scheme {scheme!r} is not one of {', '.join(SCHEMES)}"
                          f"{did_you_mean(scheme, SCHEMES)}")


def check_found_classes(cfg: dict, where: str) -> None:
    """What depends on the classes, checked again when stage 00 took them from the data (the
    config listed none): every metric's own check. Raises ``ConfigError`` naming ``where``."""
    for name in cfg["metrics"]:
        get_metric(name, cfg, where)


def check_experiment(cfg: dict, where: str, sources: list[tuple[str, dict]] | None = None,
                     comp: dict | None = None) -> None:
    """Check an experiment config's components (defaults filled, schema checked:
    :func:`lib.core.config.read_experiment`) before any work starts.

    ``where`` names the config (its file); ``sources`` (``[(file or "--set ...", its mapping)]``,
    later ones overriding earlier ones) lets each error name the file or override that set the
    key. Checks: registry names (:data:`SECTIONS`: features, model, optimizer, scheduler, loss; ``loss``
    may be ``auto``) and each component's ``params`` against the registered callable's signature
    (unknown names unless it takes ``**kwargs``; types where the annotation is a plain
    int/float/bool/str or, without one, the default is a float; values that name an entry of
    another registry, :attr:`Registry.choices`, e.g. ``model.params.pooling``; the ranges of
    :data:`lib.core.schema.PARAM_RANGES`, e.g. ``loss.params.label_smoothing`` in [0, 1)), a
    ``train.device`` ``cuda:N`` against the GPUs present, and with the prepared competition
    ``comp`` (stage 00's ``competition.yaml``) ``train.folds`` against its folds. Returns
    ``None``; raises ``ConfigError``.
    """
    sources = sources or [(where, cfg)]
    _check_waveform_path(cfg, sources, where)
    _check_run(cfg, sources, where, comp)
    _check_mixing(cfg, sources, where, comp)
    _check_classical(cfg, sources, where)
    registries = {k: r for k, r in SECTIONS.items() if k != "frontend" or cfg.get("frontend")}
    for i, entry in enumerate(cfg["augment"]["waveform"]):
        keys = ["augment", "waveform", i]
        obj = WAVE_AUGMENTS.get(entry["name"], f"{source_of(sources, [*keys, 'name'], where)} ({dotted(keys)}.name)")
        _check_params([obj], entry.get("params") or {}, CODE_SUPPLIED["augment.waveform"], keys, sources, where)
        _check_ranges("augment.waveform", entry["name"], entry.get("params") or {}, keys, sources, where)
    for key, registry in registries.items():
        name = cfg[key]["name"]
        names = ["bce", "ce"] if key == "loss" and name == "auto" else [name]
        objs = [registry.get(n, f"{source_of(sources, [key, 'name'], where)} ({key}.name)") for n in names]
        if key == "model" and takes_generic(objs[0]):  # pretrained, freeze_blocks, ... (lib.models.pretrained_weights)
            try:
                split_params(objs[0], cfg[key]["params"])
            except ConfigError as exc:
                raise ConfigError(f"{source_of(sources, [key, 'params', 'pretrained'], where)}: {exc}") from None
            objs = objs + [transfer_options]
        _check_params(objs, cfg[key]["params"], CODE_SUPPLIED.get(key, set()), [key], sources, where)
        _check_ranges(key, name, cfg[key]["params"], [key], sources, where)
        for name, choices in registry.choices.items():
            if name in cfg[key]["params"]:
                choices.get(cfg[key]["params"][name], f"{source_of(sources, [key, 'params', name], where)} "
                                                        f"({key}.params.{name})")
        if key == "model":
            _check_head(cfg["model"]["params"], sources, where)
        for obj in objs:  # a component's own check of its values (e.g. a timm architecture name)
            if hasattr(obj, "check_params"):
                try:
                    obj.check_params(cfg[key]["params"])
                except ConfigError as exc:
                    raise ConfigError(f"{source_of(sources, [key, 'params'], where)}: {exc}") from None
    _check_loss(cfg, sources, where, comp)  # (after its params' names: an unknown one is no TypeError of the loss)
    _check_by_building(cfg, sources, where, comp)
    kind = getattr(FEATURES.get(cfg["features"]["name"]), "kind", None)
    if kind not in INPUT_KINDS:
        raise ConfigError(f"{source_of(sources, ['features', 'name'], where)}: feature set {cfg['features']['name']!r} "
                          f"declares input kind {kind!r}; expected one of {', '.join(INPUT_KINDS)} (lib.inputs)")
    if comp and comp.get("matrix") and kind != "frames":  # said by every stage, not only by 01 (02 said: run 01)
        raise ConfigError(f"{source_of(sources, ['features', 'name'], where)}: feature set {cfg['features']['name']!r} "
                          f"computes features from audio, but competition {comp['name']!r} ships matrices (its "
                          f"matrix section): use features: {{name: precomputed}}")


def _check_head(params: dict, sources, where: str) -> None:
    """``model.params.head_hidden`` is not set beside a ``pooling`` that classifies itself
    (``attention``: its frame logits replace the head, :class:`lib.models.base.AudioClassifier`),
    where it would be ignored. Raises ``ConfigError`` naming the file (or override) and both keys."""
    pooling = params.get("pooling")
    if params.get("head_hidden") is not None and pooling is not None and POOLINGS.get(pooling).gives_logits:
        raise ConfigError(f"{source_of(sources, ['model', 'params', 'head_hidden'], where)}: model.params.head_hidden "
                          f"{params['head_hidden']!r} has no effect with model.params.pooling {pooling!r}, which "
                          f"classifies each frame itself (no head after it): remove head_hidden, or choose a pooling "
                          f"that feeds the head ({', '.join(n for n in POOLINGS.names() if not POOLINGS.get(n).gives_logits)})")


def _check_by_building(cfg: dict, sources, where: str, comp: dict | None) -> None:
    """Build the waveform augmentations, the optimiser (over one dummy parameter) and the
    scheduler once with the config's parameters, so that their own checks (``min_snr_db`` above
    ``max_snr_db``, a noise ``color``, torch's ``anneal_strategy``) fail now, naming the key, and
    not when a fold starts (after the experiments before it in the same run trained). The data's
    sample rate (``features.params.sample_rate``, else ``comp``'s ``audio.sample_rate``) is
    passed where known; else the checks that need it (a filter below Nyquist) wait for the run,
    as does reading a ``background`` augmentation's ``folder``."""
    import torch

    from .training.optim import build_optimizer
    from .training.wave_augment import WaveAugmenter

    rate = (cfg["features"].get("params") or {}).get("sample_rate") or ((comp or {}).get("audio") or {}).get("sample_rate")

    def build(keys: list, make):
        try:
            return make()
        except (ConfigError, TypeError, ValueError, ArithmeticError, RuntimeError) as exc:  # ours name their
            named = "" if isinstance(exc, ConfigError) else ".".join(keys) + ": "  # key; torch's do not
            raise ConfigError(f"{source_of(sources, keys, where)}: {named}{exc}") from None

    # 10**9 Hz: no Nyquist bound until the data's rate is known; a background folder is read by the run
    entries = [dict(e, params={k: v for k, v in (e.get("params") or {}).items() if k != "folder"})
               for e in cfg["augment"]["waveform"]]
    build(["augment", "waveform"], lambda: WaveAugmenter(entries, sample_rate=rate or 10**9))
    opt = build(["optimizer", "params"], lambda: build_optimizer(cfg["optimizer"], [{"params": [torch.zeros(1, requires_grad=True)]}]))
    build(["scheduler", "params"], lambda: SCHEDULERS.build(cfg["scheduler"], optimizer=opt, steps_per_epoch=100,
                                                            epochs=cfg["train"]["epochs"]))  # (a run's steps)


def _check_ranges(section: str, component: str, params: dict, keys: list, sources, where: str) -> None:
    """Check each of ``params`` of ``component`` against :data:`lib.core.schema.PARAM_RANGES`
    of ``section``; ``keys`` is the section's path in the config (``["augment", "waveform", 0]``).
    Raises ``ConfigError`` naming the file (or override), the key and what is allowed."""
    for name, value in params.items():
        problem = param_problem(section, component, name, value)
        if problem:
            path = [*keys, "params", name]
            raise ConfigError(f"{source_of(sources, path, where)}: {dotted(path)} {problem}, got {value!r}")


def _check_run(cfg: dict, sources, where: str, comp: dict | None) -> None:
    """What a run needs of the machine and the prepared data: a ``train.device`` ``cuda:N`` names
    a GPU that is there; ``train.folds`` are folds of ``comp`` (``0 .. folds.n_folds - 1``; not
    checked without ``comp``); ``train.monitor`` is a metric of ``comp``'s task;
    ``train.sampler: balanced_slices`` has ``comp``'s slices to balance within;
    ``model.params.recording_weights`` is not set for a multi-label ``comp``; a scheduler's
    ``warmup_epochs`` is at most ``train.epochs``; ``tta.shifts`` are shorter than ``comp``'s
    window. Raises
    ``ConfigError`` naming the file (or override) and the key."""
    device = cfg["train"]["device"]
    if device.startswith("cuda:"):
        import torch

        if torch.cuda.is_available() and int(device[5:]) >= torch.cuda.device_count():
            raise ConfigError(f"{source_of(sources, ['train', 'device'], where)}: train.device {device!r}: this machine "
                              f"has {torch.cuda.device_count()} GPU(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    folds, n = cfg["train"]["folds"], (comp or {}).get("folds", {}).get("n_folds")
    bad = [f for f in folds or [] if n is not None and not 0 <= f < n]
    if bad:
        raise ConfigError(f"{source_of(sources, ['train', 'folds'], where)}: train.folds {bad} are not folds of the "
                          f"prepared competition {comp.get('name')!r}: allowed 0 to {n - 1} (its folds.n_folds is {n})")
    warmup, epochs = (cfg["scheduler"].get("params") or {}).get("warmup_epochs"), cfg["train"]["epochs"]
    if warmup is not None and warmup > epochs:
        raise ConfigError(f"{source_of(sources, ['scheduler', 'params', 'warmup_epochs'], where)}: "
                          f"scheduler.params.warmup_epochs {warmup} is more than train.epochs {epochs}: the learning "
                          f"rate would never reach its peak")
    if cfg["train"]["monitor"] is not None and comp is not None:
        get_metric(cfg["train"]["monitor"], comp, f"{source_of(sources, ['train', 'monitor'], where)} (train.monitor)")
    if cfg["model"]["params"].get("recording_weights") and comp is not None and "task" in comp \
            and tasks.output_task(comp) == "multilabel":  # (said now, not when the first fold fits)
        raise ConfigError(f"{source_of(sources, ['model', 'params', 'recording_weights'], where)}: "
                          f"model.params.recording_weights is not for multi-label tasks (competition "
                          f"{comp.get('name')!r}: scikit-learn's one-vs-rest fit takes no sample weights here)")
    clip = ((comp or {}).get("audio") or {}).get("clip_seconds")
    long = [s for s in cfg["tta"]["shifts"] if clip and abs(s) >= clip]
    if long:  # (a roll by the whole window changes nothing; longer ones wrap round: probe)
        raise ConfigError(f"{source_of(sources, ['tta', 'shifts'], where)}: tta.shifts {long} (seconds) are not shorter "
                          f"than the window, audio.clip_seconds {clip} of competition {comp.get('name')!r}: each "
                          f"shift rolls the window round in time, so give shifts between 0 and {clip}")
    if cfg["train"]["sampler"] == "balanced_slices" and comp is not None and not comp.get("slices"):
        raise ConfigError(f"{source_of(sources, ['train', 'sampler'], where)}: train.sampler balanced_slices balances "
                          f"the classes within each slice, but the prepared competition {comp.get('name')!r} declares "
                          f"none: add `slices: [COLUMN, ...]` to its config and run 00_prepare.py again")


def _check_classical(cfg: dict, sources, where: str) -> None:
    """A scikit-learn member's config file sets none of :data:`NOT_FOR_CLASSICAL`, nor does a
    later file of its ``base:`` chain: they would be ignored. Earlier files (a network's config
    that the member's file builds on) may set them, and so may a ``--set``, which a run passes to
    every experiment it trains (``run_all.sh --set train.epochs=5``), and so does the resolved
    config that 02 writes (``models/<exp>/config.yaml``: every default filled in, read by 03 and
    the sweeps' printed commands). Raises ``ConfigError`` naming the file and the keys."""
    setters = [src for src, raw in sources if _sets(raw or {}, ["model", "name"])]
    if not is_classical(cfg["model"]) or (setters and setters[-1].startswith("--set ")):
        return  # (a --set model.name=hgb on a network's config, a sweep over model.name: the files are networks')
    files = [(src, raw or {}) for src, raw in sources if not src.startswith("--set ")
             and not (Path(src).name == "config.yaml" and Path(src).parent.parent.name == "models")]  # (verification)
    chosen = max([i for i, (_, raw) in enumerate(files) if _sets(raw, ["model", "name"])], default=len(files))
    for src, raw in files[chosen:]:
        given = [k for k in NOT_FOR_CLASSICAL if _sets(raw, k.split("."))]
        if given:
            raise ConfigError(f"{src}: {', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to the "
                              f"scikit-learn member {cfg['model']['name']!r}: it is fitted once per fold, without "
                              f"epochs, optimiser, schedule, loss or augmentation"
                              + (", from statistics over time that time shifts do not change" if "tta.shifts" in given
                                 else "") + f" (docs/zoo.md); remove {'it' if len(given) == 1 else 'them'}")


def _sets(raw: dict, keys: list[str]) -> bool:
    """Whether the mapping ``raw`` (a config file's or an override's own) sets the key path ``keys``."""
    for key in keys:
        if not isinstance(raw, dict) or key not in raw:
            return False
        raw = raw[key]
    return True


def _check_mixing(cfg: dict, sources, where: str, comp: dict | None) -> None:
    """``augment.mixup.p`` + ``augment.cutmix.p`` at most 1 (each is its share of the batches,
    never both); a waveform ``mixup`` with ``labels: union`` only on sigmoid outputs (with
    ``comp``: softmax outputs, multiclass or subdivided, would get targets summing to 2). Raises
    ``ConfigError`` naming the file (or override) and the key."""
    aug = cfg["augment"]
    if aug["mixup"]["p"] + aug["cutmix"]["p"] > 1:
        raise ConfigError(f"{source_of(sources, ['augment', 'cutmix', 'p'], where)}: augment.mixup.p "
                          f"{aug['mixup']['p']} + augment.cutmix.p {aug['cutmix']['p']} is more than 1: each is its "
                          f"share of the batches (mixup or cutmix, never both)")
    softmax = comp is not None and "task" in comp and tasks.output_task(comp) == "multiclass"
    for i, entry in enumerate(aug["waveform"]):
        union = entry["name"] == "mixup" and (entry.get("params") or {}).get("labels") == "union"
        if union and softmax:
            raise ConfigError(f"{source_of(sources, ['augment', 'waveform', i, 'params', 'labels'], where)}: "
                              f"augment.waveform[{i}] mixup labels: union gives both clips' labels, which softmax "
                              f"outputs cannot hold (competition {comp.get('name')!r} trains {comp.get('task')} "
                              f"classes one of which is true): use labels: mix")


def _check_loss(cfg: dict, sources, where: str, comp: dict | None) -> None:
    """With the prepared competition ``comp``: the loss fits its task (``bce`` on a multiclass
    task, ``ce`` on a sigmoid one: :func:`lib.training.losses.build_loss`'s refusal, said now and
    not when the first fold starts), and a per-class focal ``alpha`` list has one weight per
    class. Raises ``ConfigError`` naming the file (or override) and the key."""
    if comp is None or "task" not in comp:
        return
    from .training.losses import build_loss

    try:
        build_loss(cfg["loss"], comp)
    except ConfigError as exc:
        raise ConfigError(f"{source_of(sources, ['loss', 'name'], where)}: {exc}") from None
    alpha = cfg["loss"]["params"].get("alpha")
    n = len(comp.get("fine_classes") or comp.get("classes") or [])
    if isinstance(alpha, list) and n and len(alpha) != n:
        raise ConfigError(f"{source_of(sources, ['loss', 'params', 'alpha'], where)}: loss.params.alpha has "
                          f"{len(alpha)} class weights; competition {comp.get('name')!r} has {n} classes")


def _check_waveform_path(cfg: dict, sources, where: str) -> None:
    """The waveform path's sections go together: ``features.name: waveform`` if and only if a
    ``frontend`` section is given (or the model brings its own front end, ``cnn14``: then waveform
    features and no ``frontend``); ``augment.waveform`` and ``tta.hop_seconds`` only with it.
    Raises ``ConfigError`` naming the file and key."""
    waveform = cfg["features"]["name"] == "waveform"
    origin = lambda *keys: source_of(sources, list(keys), where)  # noqa: E731
    if owns_frontend(cfg["model"], f"{origin('model', 'name')} (model.name)"):
        if not waveform or cfg.get("frontend"):
            raise ConfigError(f"{origin('model', 'name')}: model {cfg['model']['name']!r} computes its own front end "
                              f"from the waveform: use features: {{name: waveform, params: {{sample_rate: ...}}}} and no "
                              f"frontend section")
        return
    if waveform and not cfg.get("frontend"):
        removed = source_of(sources, ["frontend"], "")  # a file or --set that set it to null: that is the culprit
        raise ConfigError(f"{removed or origin('features', 'name')}: features.name waveform"
                          + (f" (set in {origin('features', 'name')})" if removed else "")
                          + " caches raw audio; the model then needs a front end: "
                          + ("frontend: null removes it" if removed else
                             "add e.g. frontend: {name: log_mel, params: {n_mels: 64}}"))
    if not waveform:
        for keys, value, what in ((("frontend",), cfg.get("frontend"), "a frontend section"),
                                  (("augment", "waveform"), cfg["augment"]["waveform"], "augment.waveform entries"),
                                  (("tta", "hop_seconds"), cfg["tta"]["hop_seconds"], "tta.hop_seconds")):
            if value:
                raise ConfigError(f"{origin(*keys)}: {what} need(s) waveform input, but features.name is "
                                  f"{cfg['features']['name']!r}; use features: {{name: waveform}}"
                                  + (" (or set audio.hop_seconds in the competition config)" if keys[0] == "tta" else ""))


def _check_params(objs: list, params: dict, supplied: set, keys: list, sources, where: str) -> None:
    """Check ``params`` against the signatures of ``objs`` (see :func:`check_experiment`);
    ``keys``: the component's path in the config (``["augment", "waveform", 0]``)."""
    key = dotted(keys)
    settable, open_ended = {}, False
    for obj in objs:
        try:
            sig = inspect.signature(obj)
        except (TypeError, ValueError):  # a builtin without a signature: nothing to check against
            return
        for name, p in sig.parameters.items():
            open_ended |= p.kind is p.VAR_KEYWORD
            if name not in supplied and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                settable.setdefault(name, p)
    for name, value in params.items():
        origin = source_of(sources, [*keys, "params", name], where)
        if name not in settable:
            if name in supplied:  # e.g. a sample rate (the data's), focal's softmax (the task's outputs)
                raise ConfigError(f"{origin}: {key}.params.{name} is not settable: the code gives it ({key} "
                                  f"{_names(objs)} takes: {', '.join(settable) or 'none'}); remove it")
            if open_ended:
                continue
            raise ConfigError(f"unknown parameter {key}.params.{name} in {origin} ({key} {_names(objs)} takes: "
                              f"{', '.join(settable) or 'none'}){did_you_mean(name, settable)}")
        p = settable[name]
        ann = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "")
        expected = _PLAIN_TYPES.get(ann) or (float if type(p.default) is float else None)
        if expected and not (value is None and p.default is None) and not _is_a(value, expected):
            raise ConfigError(f"{origin}: {key}.params.{name} must be {_TYPE_WORDS[expected]}, got {value!r}")


def _names(objs: list) -> str:
    """The names of the callables ``objs``, for messages (``transfer_options``: the fine-tuning options)."""
    names = " / ".join(getattr(o, "__name__", str(o)) for o in objs if o is not transfer_options)
    return names + (" with the fine-tuning options" if transfer_options in objs else "")


def _is_a(value, expected: type) -> bool:
    """``isinstance`` where bool is no number and an int is a float."""
    if isinstance(value, bool):
        return expected is bool
    return isinstance(value, (int, float) if expected is float else expected)
