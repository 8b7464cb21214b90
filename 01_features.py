#!/usr/bin/env python3
"""Stage 01: compute the feature sets that experiment configs ask for (or cache their waveforms), once, under output/features/.

    python 01_features.py configs/cnn_small.yaml [configs/other.yaml ...] [--force] [--workers N]
"""
from lib import cli


def main() -> None:
    p = cli.parser(__doc__)
    cli.add_experiment_args(p, many=True)
    p.add_argument("--workers", type=cli.positive_int, default=None, help="processes (default: one per CPU core)")
    args = p.parse_args()
    from lib.core.utils import format_seconds
    from lib.evaluation.ensemble import features_rebuilt
    from lib.features.cache import build_feature_set, section_settings, settings_diff

    out = cli.outputs(args)
    unit = "segments" if ((out.prepared_competition() or {}).get("segments") or {}).get("unit") == "segment" else "recordings"
    sections, first, cfgs = {}, {}, {}
    for path in args.configs:
        cfgs[path] = cli.experiment(path, args.set)
        sec = cfgs[path]["features"]
        sections.setdefault(sec["set"], sec)
        first.setdefault(sec["set"], path)
        if diff := settings_diff(section_settings(sections[sec["set"]]), section_settings(sec), first[sec["set"]], path):
            raise cli.ConfigError(f"feature set {sec['set']!r} is asked for with different settings ({diff}); give "
                                  f"one of them another features.set name")
    for name, sec in sections.items():
        m = build_feature_set(out, sec, force=args.force, workers=args.workers)
        if changed := out.audio_changed(name):  # said now, not first by 02's refusal
            print(f"WARNING: {name}: the {' and '.join(changed)} recordings are not those 00_prepare.py read (a "
                  f"file replaced since): run 00_prepare.py again; 02 and 03 refuse this feature set until then")
        state = ("up to date, skipped (use --force to rebuild)" if m["skipped"] else f"built in "
                 f"{format_seconds(m['seconds'])}" + (f" ({m['because']})" if m.get("because") else ""))
        trained = [] if m["skipped"] else [(e, t) for e in out.trained_on(name)
                                           if (t := out.trained(e).check(hashes=False)[0])]
        stale = [e for e, t in trained if features_rebuilt(out, e, t)]  # (a shared set rebuilt for one config:
        if stale:  # said now, not first by 04 or the leaderboard: probe)
            print(f"note: {name} was built again: {', '.join(stale)} trained on its earlier build "
                  f"{'is' if len(stale) == 1 else 'are'} stale now (02_train.py trains {'it' if len(stale) == 1 else 'them'} again)")
        if current := [e for e, _ in trained if e not in stale and "test" in m["splits"]
                       and (pred := out.predicted(e).read()) and features_rebuilt(out, e, pred, "test")]:
            print(f"note: {name}'s train features are those of its earlier build: {', '.join(current)} trained on "
                  f"them {'stays' if len(current) == 1 else 'stay'} current; 03_infer.py predicts its test split again")
        if m.get("kind") in ("waveform", "frames"):
            rate = m["sample_rate"] or m["frames_per_second"]
            rows = ", ".join(f"{s} {v['recordings']} {unit} in {v['regions']} regions ({v['wave'][0] / rate / 60:.1f} "
                             f"min, {v['windows']} windows)" for s, v in m["splits"].items())
            comp = out.load_competition()
            native = comp["audio"]["sample_rate"] or comp["native_sample_rate"]  # what 00 reads them at
            moved = (f" (resampled explicitly from the files' rates, {comp['audio']['resample_type']})"
                     if m["kind"] == "waveform" and native != m["sample_rate"] else "")
            what = (f"whole waveforms at {m['sample_rate']} Hz{moved}" if m["kind"] == "waveform" else
                    f"the competition's matrices, {m['spec_shape'][1]} bins at {rate:g} frames/s")
            print(f"{name}: {state}; {what}, {m['dtype']}; {rows} -> {out.features(name)}")
            print_silent(name, m, unit)
            continue
        rows = ", ".join(f"{s} {v['spec'][0]}" for s, v in m["splits"].items())
        print(f"{name}: {state}; channels {m['channel_names']} {m['spec_shape'][1:]} + {m['n_scalars']} scalars; "
              f"rows: {rows}; {m['sample_rate']} Hz, hop {m['hop_length']} -> {out.features(name)}")
        print_silent(name, m, unit)
        if m["settings"].get("model_sample_rate") not in (None, m["sample_rate"]):  # hf_embeddings: never silent
            print(f"{name}: windows resampled explicitly from {m['sample_rate']} Hz to the model's "
                  f"{m['settings']['model_sample_rate']} Hz ({m['settings']['resample_type']})")

    from lib.runs.experiment import check_buildable

    for path, cfg in cfgs.items():  # what a build or a first batch finds: said now, before any experiment trains
        for warning in check_buildable(out, cfg, path):
            print(f"WARNING: {warning}")


def print_silent(name: str, manifest: dict, unit: str) -> None:
    """A note for each split of a feature set just built that holds recordings of digital silence
    (the manifest's ``silent``; test files 00 predicts from silence are not counted); nothing for a
    set up to date (said when it was built)."""
    for split, v in manifest["splits"].items() if not manifest["skipped"] else ():
        if n := (v.get("silent") or {}).get("count"):
            print(f"note: {name}: {n} {split} {unit if n > 1 else unit[:-1]} {'are' if n > 1 else 'is'} digital "
                  f"silence (every sample 0), e.g. {', '.join(v['silent']['ids'])}: kept as {'they are' if n > 1 else 'it is'}; "
                  f"check {'them' if n > 1 else 'it'} if the audio should not be silent")


if __name__ == "__main__":
    cli.run("01_features", main)
