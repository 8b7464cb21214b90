"""The model-zoo comparison table: OOF scores, parameters and training time of trained experiments.

    .venv/bin/python bench/zoo.py --output-dir OUT [EXPERIMENT ...]

Reads ``OUT/models/<exp>/scores.json`` (written by ``02_train.py``) of the named experiments (all
of them without names) and prints a markdown table: the model (``model.name`` and its params),
parameters (fitted values for the scikit-learn members), every OOF metric of the competition, the
summed training time of the folds and the epochs run per fold. It trains nothing: run
``02_train.py`` first (docs/zoo.md gives the commands of the figures there).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.core.utils import format_count, format_seconds  # noqa: E402


def row(scores: dict) -> dict:
    """One table row from an experiment's ``scores.json``."""
    model = scores["config"]["model"]
    params = ", ".join(f"{k}={v}" for k, v in (model.get("params") or {}).items())
    epochs = [f["epochs_run"] for f in scores["folds"]]
    return {"experiment": scores["experiment"], "model": f"{model['name']}({params})",
            "parameters": format_count(scores["n_parameters"]), **{k: f"{v:.4f}" for k, v in scores["oof"].items()},
            "train time": format_seconds(scores["seconds"]), "epochs/fold": f"{min(epochs)}-{max(epochs)}",
            "partial": "yes" if scores["partial"] else ""}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output-dir", required=True, type=Path)
    p.add_argument("experiments", nargs="*")
    args = p.parse_args()
    names = args.experiments or sorted(d.name for d in (args.output_dir / "models").iterdir()
                                       if (d / "scores.json").exists())
    rows = []
    for name in names:
        path = args.output_dir / "models" / name / "scores.json"
        if not path.exists():
            sys.exit(f"{path} not found: train {name} with 02_train.py first")
        rows.append(row(json.loads(path.read_text())))
    cols = list(dict.fromkeys(k for r in rows for k in r))
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")


if __name__ == "__main__":
    main()
