"""What every stage script shares: common arguments, error handling, timing."""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

from ..data.audio import AudioError
from ..data.prepare import InputError
from .config import ROOT, ConfigError, apply_overrides, load_experiment
from .paths import MissingArtifact, Outputs
from .utils import format_seconds

EXPECTED_ERRORS = (InputError, ConfigError, MissingArtifact, AudioError, FileNotFoundError, ValueError)


def parser(description: str) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with the shared ``--output-dir`` option."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--output-dir", default=str(ROOT / "output"), help="artifact folder (default: %(default)s)")
    return p


def add_experiment_args(p: argparse.ArgumentParser, many: bool = False) -> None:
    """Add the experiment config argument(s), ``--set key=value`` overrides and ``--force``."""
    p.add_argument("configs" if many else "config", nargs="+" if many else None,
                   help="experiment config(s), e.g. configs/cnn_small.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=3 (repeatable)")
    p.add_argument("--force", action="store_true", help="rebuild even when an up-to-date result exists")


def parse_experiment(description: str):
    """Parse ``CONFIG [--set ...] [--force] [--output-dir ...]``: returns ``(args, Outputs, config)``."""
    p = parser(description)
    add_experiment_args(p)
    args = p.parse_args()
    return args, outputs(args), experiment(args.config, args.set)


def experiment(path: str, overrides: list[str]) -> dict:
    """Load an experiment config and apply ``--set`` overrides."""
    return apply_overrides(load_experiment(path), overrides)


def run(stage: str, main) -> None:
    """Run ``main(args)`` for a stage: print the wall time at the end, and turn expected errors
    into a one-paragraph message and exit code 1 (no traceback unless ``PIPELINE_DEBUG=1``); other
    errors keep their traceback."""
    t0 = time.time()
    try:
        main()
    except EXPECTED_ERRORS as exc:
        if os.environ.get("PIPELINE_DEBUG"):
            traceback.print_exc()
        print(f"\n{stage}: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"\n{stage}: interrupted; finished artifacts are intact", file=sys.stderr)
        sys.exit(130)
    except Exception:
        traceback.print_exc()
        print(f"\n{stage}: failed (see the traceback above)", file=sys.stderr)
        sys.exit(1)
    print(f"{stage}: done in {format_seconds(time.time() - t0)}")


def outputs(args) -> Outputs:
    """The ``Outputs`` layout for ``--output-dir``."""
    from pathlib import Path

    return Outputs(Path(args.output_dir).resolve())
