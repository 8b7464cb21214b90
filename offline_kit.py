#!/usr/bin/env python3
"""Pack the pipeline's code and the wheels a Kaggle notebook lacks into a folder to upload as a dataset.

    python offline_kit.py --to kits/audio-pipeline-kit [--present torch numpy ...] [--python-version 3.11]
                          [--platform manylinux2014_x86_64] [--force]

In the notebook (no internet): pip install --no-index --find-links KIT/wheels -r KIT/requirements-kit.txt,
then KIT/code first on sys.path; KIT/notebook.ipynb does it and predicts from a bundle (05_bundle.py).
"""
import argparse

from lib import cli


def main() -> None:
    from lib.shipping.kit import KAGGLE_HAS, build_kit

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--to", required=True, help="the kit folder to write")
    p.add_argument("--present", nargs="*", default=list(KAGGLE_HAS),
                   help="packages the notebook's image has (default: Kaggle's Python image's: %(default)s)")
    p.add_argument("--python-version", help="the notebook's Python, e.g. 3.11 (default: this one)")
    p.add_argument("--platform", help="the notebook's platform tag, e.g. manylinux2014_x86_64 (default: this one)")
    p.add_argument("--force", action="store_true", help="replace an existing kit folder")
    args = p.parse_args()
    r = build_kit(args.to, args.present, args.python_version, args.platform, args.force)
    print(f"kit -> {args.to}: code ({len(r['code'])} entries), {len(r['wheels'])} wheels for {r['missing'] or 'nothing'}; "
          f"install: pip install --no-index --find-links {args.to}/wheels -r {args.to}/requirements-kit.txt")


if __name__ == "__main__":
    cli.run("offline_kit", main)
