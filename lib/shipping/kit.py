"""The offline kit: the project's code and the wheels a Kaggle notebook lacks, ready to upload as a dataset.

Layout of the kit folder::

    code/                  lib/, the stage scripts, predict_bundle.py, configs/, docs/, requirements*.txt, README.md
    wheels/                wheels of the prediction requirements the notebook's image lacks, with their
                           dependencies (those the image has are left out)
    requirements-kit.txt   what to install from wheels/ (empty when the image has everything)
    INSTALL.txt            the one-line offline install
    notebook.ipynb         the template notebook: install, import lib (checked), predict from a bundle

The notebook installs with ``pip install --no-index --find-links KIT/wheels -r
KIT/requirements-kit.txt`` (no internet), puts ``KIT/code`` first on ``sys.path``, checks that
``import lib`` is this project's (another ``lib`` already imported or earlier on the path is an
error, not a surprise), and calls :func:`lib.shipping.bundle.predict_bundle`.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ..core.config import ROOT
from ..core.errors import ConfigError
from ..core.utils import replace_folder

INFER_REQUIREMENTS = ROOT / "requirements-infer.txt"
KAGGLE_HAS = ("torch", "torchaudio", "torchvision", "numpy", "scipy", "pandas", "scikit-learn", "librosa",
              "soundfile", "soxr", "pyyaml", "pydantic", "tqdm", "threadpoolctl", "timm", "matplotlib",
              "packaging", "typing-extensions", "joblib", "numba", "llvmlite")
"""Packages assumed present in the notebook's image (Kaggle's Python image has them); ``--present``
replaces the list. Their wheels are left out of the kit; pip uses the installed ones."""
CODE = ("lib", "configs", "docs", "00_prepare.py", "01_features.py", "02_train.py", "03_infer.py", "04_ensemble.py",
        "05_bundle.py", "pretrain.py", "predict_bundle.py", "requirements.txt", "requirements-infer.txt", "README.md")


def _name(requirement: str) -> str:
    """The normalised project name of a requirement line or wheel file name (PEP 503)."""
    return re.sub(r"[-_.]+", "-", re.split(r"[<>=!~;\[ ]", requirement.strip(), maxsplit=1)[0]).lower()


def requirements(path: Path = INFER_REQUIREMENTS) -> list[str]:
    """The requirement lines of ``path`` (comments and blank lines dropped)."""
    return [line.split("#")[0].strip() for line in path.read_text().splitlines() if line.split("#")[0].strip()]


def build_kit(dest: str | Path, present=KAGGLE_HAS, python_version: str | None = None,
              platform: str | None = None, force: bool = False, log=print) -> dict:
    """Write the offline kit into ``dest`` (see the module docstring); returns ``{"missing":
    requirements to install, "wheels": file names, "code": entries copied}``.

    ``present``: packages the target image has (no wheels for them); ``python_version`` /
    ``platform``: the target's (``pip download``'s options, e.g. ``3.11`` and
    ``manylinux2014_x86_64``; default: this interpreter's). Wheels come from the package
    registry through ``pip download`` (binary wheels only). Built in a temporary folder and
    renamed when complete. Raises ``ConfigError`` when ``dest`` exists without ``force``, or
    with ``force`` when it is not a kit (``--force`` never deletes another folder),
    ``ConfigError`` when pip cannot download a wheel (its message included).
    """
    dest = Path(dest).resolve()
    if dest.exists() and not force:
        raise ConfigError(f"{dest} exists; choose another folder or pass --force to replace it")
    kit_files = ("INSTALL.txt", "requirements-kit.txt", "code")
    if dest.exists() and not all((dest / f).exists() for f in kit_files):
        raise ConfigError(f"--to {dest} is not an offline kit (no {', '.join(kit_files)}): --force replaces only a "
                          f"kit this command wrote, never another folder (an output folder, the project); choose "
                          f"another folder")
    tmp = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "code").mkdir(parents=True)
    for entry in CODE:
        src = ROOT / entry
        if src.is_dir():
            shutil.copytree(src, tmp / "code" / entry, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, tmp / "code" / entry)
    have = {_name(p) for p in present}
    missing = [r for r in requirements() if _name(r) not in have]
    (tmp / "wheels").mkdir()
    if missing:
        cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--disable-pip-version-check",
               "--quiet", "-d", str(tmp / "wheels"), *missing]
        if python_version or platform:
            cmd[4:4] = (["--python-version", python_version] if python_version else []) + (
                ["--platform", platform] if platform else [])
        log(f"downloading wheels for {missing} (and their dependencies)")
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ConfigError(f"pip download failed for {missing}:\n{r.stderr.strip()[-2000:]}")
        for wheel in (tmp / "wheels").iterdir():  # the image has these: pip will use its own
            if _name(wheel.name.split("-")[0]) in have:
                wheel.unlink()
    (tmp / "requirements-kit.txt").write_text("".join(f"{r}\n" for r in missing))
    (tmp / "INSTALL.txt").write_text(
        "pip install --no-index --find-links KIT/wheels -r KIT/requirements-kit.txt\n"
        "(KIT: where the kit dataset is mounted, e.g. /kaggle/input/audio-pipeline-kit; nothing to install when\n"
        "requirements-kit.txt is empty), then put KIT/code first on sys.path (notebook.ipynb does both).\n")
    shutil.copy2(ROOT / "lib" / "shipping" / "notebook.ipynb", tmp / "notebook.ipynb")
    replace_folder(tmp, dest)  # a kill leaves the old folder or the new one whole
    wheels = sorted(p.name for p in (dest / "wheels").iterdir())
    return {"missing": missing, "wheels": wheels, "code": list(CODE)}


def notebook_code(path: str | Path) -> str:
    """The code cells of a notebook joined into one Python script (to run it headless without
    Jupyter; every cell of the template is plain Python)."""
    cells = json.loads(Path(path).read_text())["cells"]
    return "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
