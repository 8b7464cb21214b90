#!/usr/bin/env python3
"""Predict a test set with a model bundle (05_bundle.py) alone -> WORK_DIR/submission.csv.

    python predict_bundle.py BUNDLE --data-dir /kaggle/input/COMPETITION --work-dir /kaggle/working [--test-csv test.csv]

Reads only the bundle and the test audio (both may be read-only); writes only under --work-dir,
which must be apart from both (a work folder that is, lies inside or contains the data folder or
the bundle is refused: it would overwrite their files).
"""
import argparse

from lib import cli


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", help="a bundle folder made by 05_bundle.py")
    p.add_argument("--data-dir", required=True, help="the competition's input folder: test audio, test CSV, sample submission")
    p.add_argument("--work-dir", required=True, help="a writable folder for the test features and the submission")
    p.add_argument("--test-csv", help="the test table, relative to --data-dir (default: the competition config's)")
    p.add_argument("--test-files", help="instead of the test table: every file matching this glob under --data-dir "
                                        "(e.g. 'unlabelled/*.wav' to pseudo-label)")
    p.add_argument("--no-submission", action="store_true", help="write the probabilities only (test_blend.csv)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    p.add_argument("--workers", type=cli.positive_int, help="feature worker processes (default: the CPU count)")
    p.add_argument("--engine", default="auto", choices=["auto", "torch", "onnx"],
                   help="auto: ONNX Runtime when the bundle has ONNX models, else PyTorch (default: %(default)s)")
    p.add_argument("--bad-test-files", choices=["error", "silence"],
                   help="a test file that exists but cannot be used (empty, unreadable, truncated): stop with the "
                        "list (error), or predict it from silence with a warning (default: the bundle's "
                        "audio.bad_test_files)")
    args = p.parse_args()
    from lib.shipping.bundle import check_work_dir

    check_work_dir(args.work_dir, args.data_dir, args.bundle, args.test_csv)  # at once (predict_bundle checks them too)
    from lib.core.device import get_device

    get_device(args.device)  # an unknown or absent device: said before any work
    from lib.shipping.bundle import predict_bundle

    r = predict_bundle(args.bundle, args.data_dir, args.work_dir, args.test_csv, args.device, args.workers,
                       args.engine, test_files=args.test_files, submission=not args.no_submission,
                       bad_test_files=args.bad_test_files)
    run = len(r["experiments"]) - len(r["not_run"])
    print(f"{r['rows']} {r['row_noun']}s, {run} experiment(s) blended by {r['method']}"
          + (f" ({len(r['not_run'])} of weight 0 not run)" if r["not_run"] else "") + ", decision "
          f"{r['decision'] or 'default'}" + (f" (not applied: submission.format {r['format']})" if r["decision"] and r[
              "format"] in ("probability", "probabilities") else "") + f"; mean probabilities {r['mean_probs']}; "
          f"{r['seconds']:.0f}s")
    print(f"wrote {r['submission']}" if r["submission"] else
          f"no submission ({'--no-submission' if args.no_submission else 'the competition has no submission section'}): "
          f"probabilities in {args.work_dir}/test_blend.csv")


if __name__ == "__main__":
    cli.run("predict_bundle", main)
