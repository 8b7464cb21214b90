#!/usr/bin/env python3
"""Stage 00: validate a competition's input and assign folds -> output/folds.csv, output/test.csv.

    python 00_prepare.py configs/data/breathing.yaml --data-dir ../shared/data/breathing
"""
from pathlib import Path

from lib import cli


def refuse_overwriting_inputs(comp: dict, out, config: str) -> None:
    """Refuse an output folder (``out``: ``lib.core.paths.Outputs``) that is the competition's data
    folder, or where a file stage 00 writes (``folds.csv``, ``test.csv``, ``competition.yaml``,
    the record) is one of the competition's inputs (its tables, sample submission, the config
    file ``config``); paths compared resolved. Raises ``ConfigError`` before anything is written."""
    data = Path(comp["data_dir"]).resolve()
    if out.root.resolve() == data:
        raise cli.ConfigError(f"--output-dir {out.root} is the competition's data folder {data}: stage 00 would "
                              f"overwrite its files (e.g. test.csv); choose another output folder")
    reads = {Path(config).resolve()} | {(data / rel).resolve() for rel in (
        (comp.get("train") or {}).get("csv"), (comp.get("test") or {}).get("csv"),
        (comp.get("submission") or {}).get("sample")) if rel}
    for path in (out.folds, out.test, out.competition, out.prepared().path):
        if path.resolve() in reads:
            raise cli.ConfigError(f"--output-dir {out.root}: stage 00 would overwrite the competition's input "
                                  f"{path.resolve()}; choose another output folder")


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("data_config", nargs="?", help="competition config (default: this project's "
                                                   "configs/data/breathing.yaml, from any folder)")
    p.add_argument("--data-dir", help="competition folder (default: the config's data_dir, usually input/)")
    args = p.parse_args()
    from lib.core.config import ROOT

    args.data_config = args.data_config or str(ROOT / "configs/data/breathing.yaml")  # (not from the shell's folder)
    from lib.components import load_competition
    from lib.components import check_found_classes
    from lib.data.prepare import prepare
    from lib.evaluation.metrics import undefined_in_folds, undefined_in_slices
    import numpy as np

    from lib.core.errors import ConfigError, InputError
    from lib.evaluation.decisions import apply_masks, mask_matches, training_slice_priors, unknown_prior_notes
    from lib.core.config import row_noun, segment_unit

    out = cli.outputs(args)
    comp = load_competition(args.data_config, args.data_dir)
    refuse_overwriting_inputs(comp, out, args.data_config)
    print(f"competition {comp['name']} ({comp['task']}) from {comp['data_dir']}")
    s = prepare(comp, out.root, check_found_classes)
    lo, mid, hi = s["duration_s"]
    a = comp["audio"]
    print(f"classes: {s['classes']}")
    unit = segment_unit(comp)
    rows = row_noun(comp) + "s"
    groups = f"in {s['groups']} groups" if comp.get("groups") or unit == "segment" else "(no groups: each its own)"
    rate = f"{s['sample_rate'] or 'native'} Hz" if not comp.get("matrix") else "matrices"
    none = f" ({s['without_labels']} without any label: every class negative)" if s["without_labels"] else ""
    t = s["test_duration_s"]  # a test recording far longer or shorter than training ones shows here
    test_lengths = f" ({t[0]:.2f}-{t[2]:.2f} s, median {t[1]:.2f})" if t else ""
    print(f"train: {s['train_rows']} {rows}{none} {groups}, {rate}, "
          f"{lo:.2f}-{hi:.2f} s (median {mid:.2f}); test: {s['test_rows']} {rows}{test_lengths}")
    for split, c in s["segments"].items():
        print(f"segments ({split}): {c['segments']} from {c['recordings']} recordings"
              + (f", {c['skipped']} skipped (segments.{comp['segments']['skip']})" if c["skipped"] else "")
              + ("; the unit of rows and scores is the segment" if unit == "segment" else
                 f"; a recording's segments aggregated by {comp['segments']['aggregate']}"))
    part = "segment" if comp.get("segments") else "recording"
    windows = (f"windows of {a['clip_seconds']} s every {a['hop_seconds']} s, aggregated by {a['aggregate']}"
               + (f" (WARNING: a hop longer than the window leaves {a['hop_seconds'] - a['clip_seconds']:g} s of "
                  f"every {a['hop_seconds']:g} s unheard)" if a["hop_seconds"] > a["clip_seconds"] else "")
               if a["hop_seconds"] else f"one {a['clip_seconds']} s clip from the start of each {part}")
    print(f"audio: {windows}; shorter {part}s padded ({a['pad']})")
    for note in s["audio_notes"]:  # files resampled, channels mixed
        print(f"audio: {note}")
    trimmed = [f"{n} {'training' if split == 'train' else 'test'} {part}{'s' if n > 1 else ''}"
               for split, n in s["trimmed"].items() if n]
    if trimmed:  # a test recording's prediction then hears its first clip alone
        sets = ("the precomputed set trains on crops from anywhere and predicts from the start unless "
                "tta.hop_seconds is set" if comp.get("matrix") else "a cached feature set keeps only the start of "
                "each (a waveform set trains on crops from anywhere and predicts from the start unless "
                "tta.hop_seconds is set)")
        print(f"note: {' and '.join(trimmed)} {'is' if sum(s['trimmed'].values()) == 1 else 'are'} longer than "
              f"{a['clip_seconds']} s: {sets}; set audio.hop_seconds to cut them into windows and use all of them")
    if s.get("fine_classes"):
        name, rows = s["smallest_fine_class"]
        print(f"subdivide: {len(comp['classes'])} classes trained as {s['fine_classes']} fine classes "
              f"(by {comp['subdivide']['by']}), the smallest {name} ({rows} rows)")
    if s["metadata"]:
        print("metadata (missing cells): " + ", ".join(
            f"{k} (" + ", ".join(f"{split} {n}" for split, n in v.items()) + ")" for k, v in s["metadata"].items()))
    shipped = (f"; column {comp['folds']['column']!r}: " + ", ".join(f"{v} -> fold {k}" for k, v in s["fold_values"].items())
               if s.get("fold_values") else "")
    print(f"folds ({comp['folds']['scheme']}, {comp['folds']['n_folds']}; no group crosses folds{shipped}), "
          f"rows per class:\n" + s["fold_table"].to_string())
    print(f"wrote {out.folds}, {out.test if s['test_rows'] else '(no test set)'}, {out.competition}")
    if s["removed_blend"]:
        print(f"removed the earlier blend, made from other folds, config or test set: {', '.join(s['removed_blend'])}"
              f" (04_ensemble.py makes it again)")
    train = out.load_split("train")
    written = out.load_competition()  # (classes found in the data when the config names none)
    try:
        masks = mask_matches(train, comp)
        tables = {"train": train, **({"test": out.load_split("test")} if out.has_test() else {})}
        for split, table in tables.items():  # a row of no possible class: said now, not after the training (review)
            apply_masks(np.ones((len(table), len(written["classes"]))), table, written, f"decision.mask ({split} rows)")
    except (ConfigError, InputError):  # a rule over a misspelt column: no later stage may start from this preparation
        out.prepared().path.unlink(missing_ok=True)
        raise
    for line in masks:
        print(line)
    for line in unknown_prior_notes(training_slice_priors(train, comp), comp):
        print(f"note: {line}")
    for warning in s["warnings"] + undefined_in_folds(comp, train) + undefined_in_slices(comp, train):  # last: seen
        print(f"WARNING: {warning}")


if __name__ == "__main__":
    cli.run("00_prepare", main)
