"""Model bundles: made from a finished blend, predicted from read-only copies by another user, with
the same predictions as the stage-by-stage chain (real breathing clips)."""
import os
import shutil
import subprocess
import shlex
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT, stage

from lib.core.errors import InputError
from lib.shipping.bundle import load_bundle


def _run(*args, read_only=(), check=True):
    """Run a project script (in this process: :func:`conftest.stage`). ``read_only``: folders the
    script must not be able to write to, in a process of its own: as root (which ignores file
    modes) they are bound read-only in a mount namespace of its own (``unshare -m``); otherwise
    their write permissions are removed for the run."""
    if not read_only:
        return stage(*args, check=check)
    cmd = [sys.executable, *map(str, args)]
    if read_only and os.geteuid() == 0:
        binds = " && ".join(f"mount --bind -o ro {shlex.quote(str(f))} {shlex.quote(str(f))}" for f in read_only)
        cmd = ["unshare", "-m", "sh", "-c", f"{binds} && exec {shlex.join(cmd)}"]
    else:
        for folder in read_only:
            subprocess.run(["chmod", "-R", "a-w", str(folder)], check=True)
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    finally:
        if read_only and os.geteuid() != 0:
            for folder in read_only:
                subprocess.run(["chmod", "-R", "u+w", str(folder)], check=True)
    if check:
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def _snapshot(folder):
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def test_bundle_round_trip_read_only_as_another_user(breathing_subset, tmp_path):
    out = tmp_path / "output"
    comp = yaml.safe_load((ROOT / "configs/data/breathing.yaml").read_text())
    comp["folds"]["n_folds"] = 3
    comp["decision"] = {"threshold": 0.45}  # a fixed decision that the bundle must carry
    data_cfg = tmp_path / "breathing3.yaml"
    data_cfg.write_text(yaml.safe_dump(comp))
    small = ["--set", "train.epochs=2", "--set", "train.batch_size=16"]
    exps = [ROOT / "configs/cnn_small.yaml", ROOT / "configs/wave_cnn.yaml"]  # cached log-mel; waveform + front end
    _run("00_prepare.py", data_cfg, "--data-dir", breathing_subset, "--output-dir", out)
    _run("01_features.py", *exps, "--output-dir", out)
    for exp in exps:
        _run("02_train.py", exp, *small, "--name", exp.stem, "--output-dir", out)
        _run("03_infer.py", exp, *small, "--name", exp.stem, "--output-dir", out)
    log = _run("04_ensemble.py", "--method", "stacking", "--output-dir", out).stdout
    members = log[log.index("members (OOF):"):log.index("blending methods")]
    assert "weight" not in members and "None" not in members and "cnn_small" in members  # stacking has no weights
    report = (out / "ensemble/report.md").read_text()
    assert "| weight |" not in report and "None" not in report
    r = _run("05_bundle.py", "--to", tmp_path / "bundle", "--output-dir", out)
    assert "bundle of 2 experiment(s)" in r.stdout
    assert "exists" in _run("05_bundle.py", "--to", tmp_path / "bundle", "--output-dir", out, check=False).stderr

    # the bundle and the test data (no training audio) copied; they and the code are read-only for the run
    if os.geteuid() == 0 and subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("running as root without mount namespaces (unshare -m): read-only folders cannot be enforced")
    bundle, data, work = tmp_path / "ro_bundle", tmp_path / "ro_data", tmp_path / "work"
    shutil.copytree(tmp_path / "bundle", bundle)
    (data / "test").mkdir(parents=True)
    for name in ("test.csv", "sample_submission.csv"):
        shutil.copy(breathing_subset / name, data)
    for f in (breathing_subset / "test").iterdir():
        shutil.copy(f.resolve(), data / "test" / f.name)
    before = {f: _snapshot(f) for f in (bundle, data)}
    r = _run("predict_bundle.py", bundle, "--data-dir", data, "--work-dir", work, read_only=(bundle, data, ROOT))
    assert "wrote" in r.stdout and "12 recordings" in r.stdout
    assert {f: _snapshot(f) for f in (bundle, data)} == before  # nothing written beside the inputs
    sub, ref = pd.read_csv(work / "submission.csv"), pd.read_csv(out / "submission.csv")
    assert sub.equals(ref)
    blend, ref_blend = pd.read_csv(work / "test_blend.csv"), pd.read_csv(out / "ensemble/test_blend.csv")
    assert blend.id.equals(ref_blend.id)
    np.testing.assert_allclose(blend[["p_E", "p_I"]], ref_blend[["p_E", "p_I"]], atol=1e-6)
    assert (np.where(blend.p_I > 0.45, "I", "E") == sub.Target).all()  # the config's threshold travelled
    for exp in exps:
        mine, theirs = pd.read_csv(work / "preds" / f"{exp.stem}.csv"), pd.read_csv(out / "preds" / f"{exp.stem}.csv")
        np.testing.assert_allclose(mine[["p_E", "p_I"]], theirs[["p_E", "p_I"]], atol=1e-6)

    # the template notebook of the offline kit, executed headless as a new user would (its cells are plain Python)
    from lib.shipping.kit import build_kit, notebook_code, requirements

    kit = tmp_path / "kit"
    build_kit(kit, present=[r.split(">")[0].split("=")[0] for r in requirements()], log=lambda *_: None)
    env = dict(os.environ, KIT_DIR=str(kit), BUNDLE_DIR=str(bundle), DATA_DIR=str(data), WORK_DIR=str(tmp_path / "nb"))
    r = subprocess.run([sys.executable, "-c", notebook_code(kit / "notebook.ipynb")], cwd=tmp_path, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert pd.read_csv(tmp_path / "nb/submission.csv").equals(ref)
    if shutil.which("jupyter") is None:
        print("jupyter nbconvert not installed: the notebook ran as a script only")
    else:
        r = subprocess.run(["jupyter", "nbconvert", "--to", "notebook", "--execute", "--output", str(tmp_path / "ran.ipynb"),
                            str(kit / "notebook.ipynb")], cwd=tmp_path, env=dict(env, WORK_DIR=str(tmp_path / "nb2")),
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        assert pd.read_csv(tmp_path / "nb2/submission.csv").equals(ref)

    # a changed file: the bundle is refused whole, naming the file
    (tmp_path / "bundle" / "models/cnn_small/fold0.pt").write_bytes(b"not a model")
    with pytest.raises(InputError, match="fold0.pt: changed since the bundle was made"):
        load_bundle(tmp_path / "bundle")
    r = _run("predict_bundle.py", tmp_path / "bundle", "--data-dir", breathing_subset, "--work-dir", tmp_path / "w",
             check=False)
    assert r.returncode == 1 and "changed since the bundle was made" in r.stderr
