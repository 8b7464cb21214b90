"""The offline kit (code + wheels the notebook image lacks) and the `lib` name guard."""
import os
import subprocess
import sys

import pytest
from conftest import ROOT

import lib
from lib.shipping.kit import KAGGLE_HAS, build_kit, notebook_code, requirements


def test_kit_holds_the_code_and_offline_installable_wheels(tmp_path):
    try:
        r = build_kit(tmp_path / "kit", present=KAGGLE_HAS, log=lambda *_: None)
    except ValueError as exc:  # ConfigError: pip could not reach the package registry
        pytest.skip(f"pip download failed (no package registry here?): {str(exc)[:200]}")
    kit = tmp_path / "kit"
    assert (kit / "code/lib/__init__.py").is_file() and (kit / "code/predict_bundle.py").is_file()
    assert not list((kit / "code").rglob("__pycache__")) and not (kit / "code/tests").exists()
    wanted = (kit / "requirements-kit.txt").read_text().split()
    assert wanted == r["missing"] and {w.split(">")[0] for w in wanted} == {"skops", "onnxruntime", "transformers"}
    names = {w.split("-")[0].lower() for w in r["wheels"]}
    assert {"skops", "onnxruntime"} <= names and not names & {"numpy", "torch", "scikit_learn", "pandas"}
    # offline: every wheel installs from the folder alone, and skops imports from there
    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                              "--target", str(target), *map(str, (kit / "wheels").iterdir())], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-2000:]
    check = subprocess.run([sys.executable, "-c", "import skops.io, onnxruntime; print(skops.io.__name__)"],
                           capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(target)), cwd=tmp_path)
    assert check.returncode == 0, check.stderr[-2000:]
    with pytest.raises(ValueError, match="exists"):
        build_kit(kit, present=KAGGLE_HAS)


def test_force_replaces_a_kit_and_never_another_folder(tmp_path):
    everything = [r.split(">")[0].split("=")[0] for r in requirements()]  # nothing to download
    build_kit(tmp_path / "kit", present=everything, log=lambda *_: None)
    (tmp_path / "kit/old.txt").write_text("from the previous kit")
    build_kit(tmp_path / "kit", present=everything, force=True, log=lambda *_: None)
    assert not (tmp_path / "kit/old.txt").exists() and (tmp_path / "kit/code/lib/__init__.py").is_file()
    # an output folder given by mistake, as a user types it: refused, nothing deleted
    out = tmp_path / "output"
    (out / "models/exp").mkdir(parents=True)
    (out / "models/exp/fold0.pt").write_bytes(b"weights")
    r = subprocess.run([sys.executable, str(ROOT / "offline_kit.py"), "--to", str(out), "--force", "--present", *everything],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"--to {out} is not an offline kit" in r.stderr and (out / "models/exp/fold0.pt").read_bytes() == b"weights"
    assert not list(tmp_path.glob(".output.partial"))


def test_another_lib_on_the_path_is_named(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib/__init__.py").write_text("")
    assert lib.other_libs([str(tmp_path), str(ROOT)]) == [str(tmp_path / "lib")]
    assert lib.other_libs([str(ROOT)]) == []
    r = subprocess.run([sys.executable, "-c", "import lib"], capture_output=True, text=True, cwd=tmp_path.parent,
                       env=dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{tmp_path}"))
    assert r.returncode == 0 and "another module named 'lib' is on sys.path" in r.stderr and str(tmp_path) in r.stderr


def test_the_notebook_refuses_a_lib_imported_before(tmp_path):
    """The template's import cell: another `lib` already imported is an error, not a silent swap."""
    kit = tmp_path / "kit"
    build_kit(kit, present=[r.split(">")[0].split("=")[0] for r in requirements()], log=lambda *_: None)
    (tmp_path / "other/lib").mkdir(parents=True)
    (tmp_path / "other/lib/__init__.py").write_text("")
    code = notebook_code(kit / "notebook.ipynb").split("# 3. predict")[0]  # install and import cells
    script = f"import sys; sys.path.insert(0, {str(tmp_path / 'other')!r}); import lib\n" + code
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                       env=dict(os.environ, KIT_DIR=str(kit)))
    assert r.returncode == 1 and "another module named lib is already imported" in r.stderr
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env=dict(os.environ, KIT_DIR=str(kit)))
    assert r.returncode == 0 and f"lib from {kit / 'code' / 'lib'}" in r.stdout, r.stderr[-2000:]


def test_default_output_is_writable_when_the_code_is_read_only(tmp_path, monkeypatch):
    from lib import cli

    assert cli.default_output() == ROOT / "output"  # a writable checkout: beside the code
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli.os, "access", lambda path, mode: False)  # as code mounted read-only
    assert cli.default_output() == tmp_path / "output"
