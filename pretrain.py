#!/usr/bin/env python3
"""Self-supervised pretraining (BYOL-A, or SimCLR) of an experiment's network on the competition's
own audio, no labels -> output/pretrained/<exp>.pt, for fine-tuning (docs/self-supervised.md).

    python pretrain.py configs/wave_cnn.yaml [--set pretrain.epochs=20] [--force]
    python 02_train.py configs/wave_cnn.yaml --set model.params.pretrained=output/pretrained/wave_cnn.pt

Runs after 00_prepare.py and 01_features.py (the experiment's feature set). Reads the audio of
pretrain.splits (default: train and test) and never a label, so the test audio may be used and no
fold's validation labels are seen. Run the same command again after an interruption: it resumes
after the last finished epoch. Overrides of pretrain.* keep the experiment's name.
"""
from lib import cli


def main() -> None:
    p = cli.parser(__doc__)
    cli.add_experiment_args(p)
    args = p.parse_args()
    out = cli.outputs(args)
    cfg = cli.experiment(args.config, args.set, args.name, announce=True, out=out)  # pretrain.* keep the name
    from lib.runs.pretrain import PretrainRun

    run = PretrainRun(cfg, out, force=args.force, log=lambda m: print(m, flush=True))
    pc, counts = cfg["pretrain"], run.recordings()
    print(f"pretraining {cfg['name']}: {pc['method']}, {pc['epochs']} epochs, batch {pc['batch_size']}, on the audio of "
          + " + ".join(f"{s} ({n} recordings)" for s, n in counts.items()) + ".\nNo label is read: "
          + ("the test audio is used, which is allowed since no label is involved, and " if "test" in counts else "")
          + "no fold's validation labels are used (no labels at all).", flush=True)
    for note in run.notes:
        print(note, flush=True)
    summary(cfg, run.run(), out)


def summary(cfg: dict, s: dict, out) -> None:
    """Print what was pretrained, how long it took, the losses, where it went and how to use it."""
    from lib.core.utils import format_seconds

    losses = s["losses"]
    print()
    if s["skipped"]:
        print(f"{cfg['name']}: pretrained weights are up to date, skipped (use --force to pretrain again)")
    after = s.get("resumed_after") or ([s["resumed_from"]] if s["resumed_from"] else [])  # (older records: none)
    how = f", resumed after epoch{'s' * (len(after) > 1)} {', '.join(map(str, after))}" if after else ""
    print(f"{cfg['name']}: {s['method']} pretraining, {s['epochs']} epochs in {format_seconds(s['seconds'])} on "
          f"{s['device']}{how}; loss {losses[0]:.4f} (epoch 1) -> {losses[-1]:.4f} (epoch {len(losses)})")
    print(f"checkpoint: {s['path']} (losses per epoch: {s['log']})")
    print(f"use it: model.params.pretrained: {s['path']}\n  e.g. python 02_train.py CONFIG --output-dir {out.root} "
          f"--set model.params.pretrained={s['path']} [--set model.params.freeze_blocks=2]")
    from lib.models.pretrained_weights import pretrained_changed

    stale = [] if s["skipped"] else [d.name for d in sorted((out.root / "models").glob("*"))
                                     if d.is_dir() and pretrained_changed(out, d.name, s["path"])]
    if stale:  # (a probe: only 02 noticed, 03-05 and the leaderboard took them for current)
        print(f"note: {', '.join(stale)} {'was' if len(stale) == 1 else 'were'} fine-tuned from the earlier checkpoint: "
              f"02_train.py trains {'it' if len(stale) == 1 else 'them'} again from this one (until then 03-05 use "
              f"the models as they are, and leaderboard.py notes it)")


if __name__ == "__main__":
    cli.run("pretrain", main, resume="run the same command again: it resumes after the last finished epoch")
