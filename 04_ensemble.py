#!/usr/bin/env python3
"""Stage 04: blend the experiments' OOF and test probabilities, fit the decision on OOF -> output/submission.csv.

    python 04_ensemble.py [EXPERIMENT ...] [--method best|softmax|normalised|equal|rank|geometric|fitted|hill_climb|stacking]
                          [--temperature 0.01] [--allow-partial]

Every method is scored cross-fitted on the OOF rows (fitted on the other folds); `best` (the
default, or the competition config's ensemble.method) uses the best one. The report is in
output/ensemble/report.md.
"""
from lib import cli


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("experiments", nargs="*", help="experiment names (default: all with OOF and test predictions)")
    p.add_argument("--method", help="blending method (default: the competition config's ensemble.method, else best)")
    p.add_argument("--temperature", type=float, help="softmax temperature (default: the config's, else 0.01)")
    p.add_argument("--allow-partial", action="store_true",
                   help="blend experiments whose folds are not all trained yet (refused by default)")
    args = p.parse_args()
    from lib.evaluation.blending import METHODS
    from lib.evaluation.ensemble import run_ensemble
    from lib.evaluation.decisions import decision_words, in_sample_note, mask_matches
    from lib.evaluation.metrics import undefined_in_slices
    from lib.core.errors import MissingArtifact
    from lib.core.utils import read_json

    if args.method is not None and args.method not in METHODS:
        p.error(f"--method: {args.method!r} is not one of {', '.join(METHODS)}")
    if args.temperature is not None and not 0 < args.temperature < float("inf"):
        p.error(f"--temperature: {args.temperature} is not a positive number")
    twice = sorted({e for e in args.experiments if args.experiments.count(e) > 1})
    if twice:
        p.error(f"experiment(s) {', '.join(twice)} named more than once (each would count as a member of its own)")
    out = cli.outputs(args)
    try:
        r = run_ensemble(out, args.experiments or None, args.method, args.temperature, args.allow_partial)
    except (MissingArtifact, cli.ConfigError) as exc:  # refused: a submission.csv there is the earlier blend's
        if out.submission.is_file():
            last, rec = read_json(out.root / "ensemble.json") or {}, out.ensembled.read()
            members = ", ".join(str(e.get("experiment")) for e in last.get("experiments") or [])
            raise type(exc)(f"{exc}; {out.submission} is still the last blend's that finished ({members}; "
                            f"written {rec['written']}), not this one's" if rec else f"{exc}; {out.submission} is "
                            f"from a 04_ensemble.py run that did not finish, not this one's") from None
        raise
    comp, train = out.load_competition(), out.load_split("train")
    fmt = lambda v: f"{v:.4f}"
    for exp, why in r["skipped"].items():
        print(f"not blended: {exp}: {why}")
    print("members (OOF" + (", after the slice prior shift" if r["slice_prior"] else "") + "):")
    print(r["table"].to_string(index=False, float_format=fmt))
    print("blending methods (OOF, cross-fitted: each fold blended by the method fitted on the others):"
          if r["oof_folds"] > 1 else "blending methods (OOF rows of a single fold: only those that fit nothing, "
                                     "since none can be checked on held-out folds):")
    methods = r["methods"]
    print((methods if methods["note"].any() else methods.drop(columns="note")).to_string(index=False, float_format=fmt))
    print(f"used: {r['method']} ({r['note']})")
    d = r["decision"]
    if d["how"] == "none":  # (a multi-label run scored by ranking metrics only printed nothing: probe)
        print(f"decision: {d['note']} ({'every class at p > 0.5' if comp['task'] == 'multilabel' else 'the most probable class'})")
    elif d["how"] == "default":
        print(f"decision: the default ({d['note']}); OOF {d['metric']} {d['scores']['default']:.4f}")
    elif d["metric"]:
        print(f"decision on {d['metric']}: {d['how']}: {decision_words(d['decision'], comp)}; "
              + ", ".join(f"{k} {v:.4f}" for k, v in d["scores"].items()) + f" ({d['note']})")
        if d["decision"] and (form := (comp.get("submission") or {}).get("format")) in ("probability", "probabilities"):
            print(f"  (not applied to the submission: submission.format {form} writes the probabilities; the decision "
                  f"scores the OOF decisions above)")  # (a probe took the thresholds for applied)
    if r["rows_masked"]:
        print(f"label masks changed {r['rows_masked']} OOF rows")
    for line in mask_matches(train, comp):
        print(line)
    if r["slice_prior"]:
        _print_slice_prior(r["slice_prior"], r["metric"], comp)
    print(f"blend ({r['method']}): " + "  ".join(f"OOF {k} {v:.4f}" for k, v in r["blend"].items())
          + in_sample_note(d) + f"; report: {out.root / 'ensemble' / 'report.md'}")
    for note in undefined_in_slices(comp, train):
        print(f"note: {note}")
    sub = r["submission"]
    if sub is None:
        why = "no 'submission' section" if out.has_test() else "no test set"
        print(f"no submission written (the competition has {why}); "
              f"scores in {out.root / 'ensemble.json'}")
        return
    sub_cfg = comp.get("submission") or {}
    targets = ([sub_cfg["target_column"]] if sub_cfg.get("target_column") else
               [c for c in sub.columns if c in comp["classes"]])  # not the sample's other columns (Usage, ...)
    numeric = [c for c in targets if sub[c].dtype.kind == "f"]  # probabilities: their means, not counts
    indicators = [c for c in targets if sub[c].dtype.kind in "iub"]  # 0/1 per class: how many rows have it
    summary = (f"mean {({c: round(float(sub[c].mean()), 4) for c in numeric})}" if numeric else
               f"per class {({c: int(sub[c].sum()) for c in indicators})}" if indicators else
               sub[targets[0]].value_counts().to_dict() if len(targets) == 1 and sub[targets[0]].nunique() <= 20 else "")
    print(f"wrote {r['path']}: {r['rows']} rows {summary}")
    if comp["task"] == "multilabel" and (none := int((sub[indicators].sum(axis=1) == 0).sum() if indicators else
                                                    sub[targets[0]].fillna("").astype(str).str.strip().eq("").sum())):
        vote = (comp.get("decision") or {}).get("group_aggregate") == "vote"  # (probe: a tie was said nowhere)
        print(f"note: {none} of {r['rows']} rows name no class (every class at or below its decision threshold"
              + ("; with group_aggregate vote a class's probability is the share of the group's recordings that "
                 "decide it (a tie goes by the group's mean probability)" if vote else "") + ")")


def _print_slice_prior(sp: dict, metric: str, comp: dict) -> None:
    """04's lines on ``decision.slice_prior``: each value's prior, the rows it leaves unshifted,
    and the chosen blend's OOF scores with and without the shift (``metric``'s warning)."""
    from lib.data.slices import counts_text
    from lib.evaluation.decisions import unknown_prior_notes
    from lib.evaluation.metrics import is_better

    def prior(q, unknown=()) -> str:  # a class whose prior is unknown there: '-' (not shifted by)
        return " ".join(f"{c} -" if c in unknown else f"{c} {v:.3f}" for c, v in zip(sp["classes"], q))

    print(f"slice prior shift on {sp['column']} (each value's training class prior replaced by the pooled one): "
          + "; ".join(f"{v} ({sp['rows'][v]} rows) {prior(q, sp.get('unknown', {}).get(v, ()))}"
                      for v, q in sp["slices"].items()) + f"; pooled {prior(sp['pooled'])}")
    if sp.get("oof_unshifted"):
        print(f"  WARNING: {sum(sp['oof_unshifted'].values())} OOF rows left unshifted "
              f"({counts_text(sp['oof_unshifted'])}): no other fold holds their {sp['column']} (folds grouped by it), so the OOF scores below cannot "
              f"judge the shift, which still changes the test rows")
    for line in unknown_prior_notes(sp, comp):
        print(f"  note: {line}")
    if sp.get("test_unknown"):
        print(f"  test rows left unshifted (values no training row has): "
              + counts_text(sp["test_unknown"]))
    for what, c in sp["compare"].items():
        print(f"  {what} the shift: {c['method']}, OOF: "
              + "  ".join(f"{k} {v:.4f}" for k, v in c.items() if k != "method" and not isinstance(v, str)))
    with_, without = (sp["compare"][k].get(metric) for k in ("with", "without"))
    if with_ is not None and without is not None and is_better(metric, without, with_, comp):
        print(f"  WARNING: without the shift the blend scores better on {metric} out of fold ({without:.4f} "
              f"against {with_:.4f}): remove decision.slice_prior unless the test's sources have other class ratios")


if __name__ == "__main__":
    cli.run("04_ensemble", main)
