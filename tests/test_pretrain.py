"""Self-supervised pretraining (pretrain.py, lib/runs/pretrain.py, lib/training/ssl.py) and loading
its checkpoints into the zoo's networks (lib/models/pretrained_weights.py), on a generated toy
competition (tones in noise, 0.5 s at 8 kHz, 2 folds): BYOL-A's loss falls, the trunk loads
exactly and a fine-tuned fold keeps its frozen blocks, a really killed run resumes, and typos
and mismatched checkpoints are clear errors."""
import json
import os
import re
import signal
import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import yaml
from conftest import make_toy_competition, stage
from test_artifacts import _kill_when

from lib.core.errors import ConfigError
from lib.core.utils import load_tensors_only
from lib.models import build_model
from lib.models.pretrained_weights import trunk_blocks

SR = 8000
SSL = {"batch_size": 8, "projector_hidden": 64, "projector_dim": 32, "predictor_hidden": 64, "lr": 3e-3}
WAVE = {"features": {"name": "waveform", "set": "wave"},
        "frontend": {"name": "log_mel", "params": {"n_mels": 16, "n_fft": 256, "hop_length": 64}},
        "model": {"name": "cnn", "params": {"channels": [8, 16], "convs_per_block": 1, "head_hidden": 8}},
        "train": {"epochs": 2, "batch_size": 8, "device": "cpu"}, "pretrain": dict(SSL, epochs=2)}
CACHED = dict(WAVE, features={"name": "log_mel", "set": "lm", "params": {"n_mels": 16, "n_fft": 256, "hop_length": 64}},
              frontend=None)


@pytest.fixture
def toy(tmp_path):
    """A prepared toy competition of 24 tone clips (and 2 test clips) with the waveform and the
    cached log-mel feature sets built: ``(output folder, waveform config, cached config)``."""
    data = tmp_path / "data"
    make_toy_competition(data, n=24, sr=SR)
    rng = np.random.default_rng(0)
    t = np.arange(SR // 2) / SR
    for f in sorted((data / "train").glob("*.wav")) + sorted((data / "test").glob("*.wav")):
        f0, onset = rng.uniform(200, 3000), rng.uniform(0, 0.3)
        tone = np.sin(2 * np.pi * f0 * t) * (t > onset) * np.exp(-(t - onset).clip(0) * rng.uniform(2, 10))
        sf.write(f, (0.5 * tone + 0.05 * rng.standard_normal(len(t))).astype(np.float32), SR)
    out = tmp_path / "out"
    stage("00_prepare.py", data / "toy.yaml", "--output-dir", out)
    wave, cached = tmp_path / "wave.yaml", tmp_path / "cached.yaml"
    wave.write_text(yaml.safe_dump(WAVE))
    cached.write_text(yaml.safe_dump(CACHED))
    stage("01_features.py", wave, cached, "--output-dir", out)
    return out, wave, cached


def _losses(out, name):
    return pd.read_csv(out / "pretrained" / f"{name}_log.csv")["loss"].tolist()


def test_byol_a_loss_falls_and_simclr_runs_on_cached_features(toy):
    out, wave, cached = toy
    log = stage("pretrain.py", wave, "--output-dir", out, "--set", "pretrain.epochs=8").stdout
    assert "No label is read: the test audio is used" in log and "train (24 recordings) + test (2 recordings)" in log
    losses = _losses(out, "wave")
    assert len(losses) == 8 and np.mean(losses[-3:]) < 0.7 * losses[0], losses  # BYOL-A, fixed seeds (about 0.55 here)
    assert "model.params.pretrained: " + str(out / "pretrained" / "wave.pt") in log
    # the cached spectrogram path, SimCLR, a crop shorter than the windows; labels never read
    log = stage("pretrain.py", cached, "--output-dir", out, "--set", "pretrain.method=simclr",
                "--set", "pretrain.crop_seconds=0.3", "--set", "pretrain.splits=[train]").stdout
    assert "train (24 recordings)." in log and "test audio" not in log
    ckpt = load_tensors_only(out / "pretrained" / "cached.pt")
    assert ckpt["method"] == "simclr" and ckpt["epochs"] == 2 and np.isfinite(ckpt["losses"]).all()
    assert "up to date, skipped" in stage("pretrain.py", cached, "--output-dir", out, "--set", "pretrain.method=simclr",
                                          "--set", "pretrain.crop_seconds=0.3", "--set", "pretrain.splits=[train]").stdout


def test_checkpoint_loads_exactly_and_a_fold_fine_tunes_with_frozen_blocks(toy):
    out, wave, _ = toy
    path = out / "pretrained" / "wave.pt"
    # 01 builds the model once: a checkpoint pretrain.py (after 01) will write is not refused yet, any other is (review)
    stage("01_features.py", wave, "--output-dir", out, "--set", f"model.params.pretrained={path}")
    r = stage("01_features.py", wave, "--output-dir", out, "--set",
              f"model.params.pretrained={out.parent / 'elsewhere.pt'}", check=False)
    assert r.returncode == 1 and "elsewhere.pt" in r.stderr and "is not a file" in r.stderr, r.stderr
    stage("pretrain.py", wave, "--output-dir", out)
    ckpt = load_tensors_only(path)
    manifest = {"kind": "waveform", "sample_rate": SR, "n_scalars": 0, "spec_shape": None, "name": "waveform",
                "settings": {"sample_rate": None}}
    params = dict(WAVE["model"]["params"], pretrained=str(path), freeze_blocks=1, backbone_lr=0.5, layer_decay=0.5)
    model = build_model({"name": "cnn", "params": params}, manifest, 3, 2, WAVE["frontend"])
    own = model.state_dict()
    assert ckpt["state_dict"] and all(torch.equal(own[k], v) for k, v in ckpt["state_dict"].items())
    assert not [k for k in ckpt["state_dict"] if k.startswith(("head.", "scalar_"))]  # a new head, a new scalar branch
    copy = out.parent / "dataset"  # the checkpoint and its record copied elsewhere (a notebook dataset): still checked
    copy.mkdir()
    for name in ("wave.pt", "wave.record.json"):
        shutil.copy2(out / "pretrained" / name, copy / name)
    copied = build_model({"name": "cnn", "params": dict(params, pretrained=str(copy / "wave.pt"))}, manifest, 3, 2,
                         WAVE["frontend"]).state_dict()
    assert all(torch.equal(copied[k], v) for k, v in ckpt["state_dict"].items())
    assert {k for k in own if k.startswith("head.")} and model.head[-1].weight.shape == (3, 8)
    blocks = trunk_blocks(model)
    assert len(blocks) == 2 and not any(p.requires_grad for m in blocks[0] for p in m.parameters())
    assert [g["lr_scale"] for g in model.param_groups()] == [0.5, 1.0]  # block 1 (block 0 frozen), then the head
    # fine-tuning through stage 02: the frozen block keeps exactly the pretrained weights, the rest learns
    r = stage("02_train.py", wave, "--output-dir", out, "--name", "ft", "--set", f"model.params.pretrained={path}",
              "--set", "model.params.freeze_blocks=1", "--set", "train.folds=[0]")
    assert "fold 0: trained" in r.stdout and f"starts from pretrained weights {path} (freeze_blocks 1)" in r.stdout
    assert "was pretrained on other" not in r.stdout
    fold = load_tensors_only(out / "models" / "ft" / "fold0.pt")["state_dict"]
    assert all(torch.equal(fold[k], v) for k, v in ckpt["state_dict"].items() if k.startswith("trunk.0."))
    assert not torch.equal(fold["trunk.2.0.weight"], ckpt["state_dict"]["trunk.2.0.weight"])
    # another checkpoint that does not load: refused before the finished experiment of that name is touched
    record = (out / "models" / "ft" / "record.json").read_text()
    r = stage("02_train.py", wave, "--output-dir", out, "--name", "ft", "--set",
              f"model.params.pretrained={out / 'models' / 'ft' / 'fold0.pt'}", "--set", "model.params.freeze_blocks=1",
              "--set", "train.folds=[0]", check=False)
    assert r.returncode == 1 and "(a fold model of 02_train.py)" in r.stderr and "replaced" not in r.stdout, r.stdout
    assert (out / "models" / "ft" / "record.json").read_text() == record
    # a test recording replaced and 01 run again: the checkpoint, pretrained on the old audio, is said to be (probe);
    # the train split is kept, so the models fine-tuned from the checkpoint stay (it is the same file)
    test_wav = sorted((out.parent / "data" / "test").glob("*.wav"))[0]
    sf.write(test_wav, np.random.default_rng(5).standard_normal(SR // 2).astype(np.float32) * 0.1, SR)
    stage("00_prepare.py", out.parent / "data" / "toy.yaml", "--output-dir", out)
    stage("01_features.py", wave, "--output-dir", out)
    ft = ("--name", "ft", "--set", f"model.params.pretrained={path}", "--set", "model.params.freeze_blocks=1",
          "--set", "train.folds=[0]")
    r = stage("02_train.py", wave, "--output-dir", out, *ft)
    assert "WARNING: ft: wave.pt was pretrained on other test recordings than feature set 'wave' holds now" in \
        r.stdout and "(the models, up to date, were trained from it as it is)" in r.stdout, r.stdout
    assert "up to date, skipped" in r.stdout
    r = stage("02_train.py", wave, "--output-dir", out, *ft, "--force")
    assert "WARNING: wave.pt was pretrained on other test recordings than feature set 'wave' holds now" in r.stdout, \
        r.stdout
    assert "fold 0: trained" in r.stdout
    for name in ("wave.pt", "wave.record.json"):  # the same checkpoint at another path: the models stay (probe A)
        shutil.copy2(out / "pretrained" / name, copy / name)
    r = stage("02_train.py", wave, "--output-dir", out, "--name", "ft", "--set",
              f"model.params.pretrained={copy / 'wave.pt'}", "--set", "model.params.freeze_blocks=1",
              "--set", "train.folds=[0]")
    assert "up to date, skipped" in r.stdout and "fold 0: trained" not in r.stdout, r.stdout
    # fold checkpoints reload without the pretrained file (build_model(..., pretrained=False))
    path.rename(path.with_suffix(".moved"))
    r = stage("02_train.py", wave, "--output-dir", out, "--name", "ft", "--set",  # a path to nothing: not "up to date"
              f"model.params.pretrained={path}", "--set", "model.params.freeze_blocks=1", "--set", "train.folds=[0]",
              check=False)
    assert r.returncode == 1 and "is not a file" in r.stderr and "up to date" not in r.stdout, r.stdout + r.stderr
    from lib.inference.infer import load_checkpoints

    assert len(load_checkpoints(out / "models" / "ft", [0], torch.device("cpu"))) == 1


def test_a_checkpoint_replaced_under_its_record_or_pretrained_again_is_noticed(toy):
    """Another checkpoint copied over a pretrain.py checkpoint (its record left as it was) left 02
    "up to date" with the models fine-tuned from the old one; a checkpoint pretrained again was
    noticed by 02 alone (a probe): pretrain.py and the leaderboard name the fine-tuned experiment."""
    out, wave, _ = toy
    path = out / "pretrained" / "wave.pt"
    stage("pretrain.py", wave, "--output-dir", out)
    stage("pretrain.py", wave, "--output-dir", out, "--name", "other", "--set", "pretrain.epochs=1")
    ft = ("--output-dir", out, "--name", "ft", "--set", f"model.params.pretrained={path}")
    stage("02_train.py", wave, *ft)
    original = path.read_bytes()
    shutil.copy2(out / "pretrained" / "other.pt", path)  # wave.record.json still describes the earlier bytes
    r = stage("02_train.py", wave, *ft, check=False)
    assert r.returncode == 1 and "up to date" not in r.stdout and "not a finished pretraining result" in r.stderr, \
        r.stdout + r.stderr
    path.write_bytes(original)
    assert "up to date, skipped" in stage("02_train.py", wave, *ft).stdout
    assert "pretrained weights" not in stage("leaderboard.py", "--output-dir", out).stdout
    log = stage("pretrain.py", wave, "--output-dir", out, "--set", "pretrain.epochs=3").stdout  # pretrained again
    assert ("note: ft was fine-tuned from the earlier checkpoint: 02_train.py trains it again from this one") in log, log
    board = stage("leaderboard.py", "--output-dir", out).stdout
    assert f"its pretrained weights {path} changed since it was trained" in board, board
    assert "fold 0: trained" in stage("02_train.py", wave, *ft).stdout
    assert "pretrained weights" not in stage("leaderboard.py", "--output-dir", out).stdout
    path.rename(out / "moved.pt")  # a path that is nothing here (moved, or relative to another folder): not "changed"
    assert "pretrained weights" not in stage("leaderboard.py", "--output-dir", out).stdout  # (review)


def test_a_killed_run_resumes_and_is_never_taken_for_finished(toy):
    out, wave, _ = toy
    path = out / "pretrained" / "wave.pt"
    stage("pretrain.py", wave, "--output-dir", out)  # a finished result of other settings
    section = {"name": "cnn", "params": dict(WAVE["model"]["params"], pretrained=str(path))}
    manifest = {"kind": "waveform", "sample_rate": SR, "n_scalars": 0, "name": "waveform", "settings": {"sample_rate": None}}
    build_model(section, manifest, 2, 0, WAVE["frontend"])  # loads
    _kill_when(["pretrain.py", wave, "--output-dir", out, "--set", "pretrain.epochs=40"], "epoch  1/40")
    assert not (out / "pretrained" / "wave.record.json").exists() and (out / "pretrained" / "wave.state.pt").exists()
    with pytest.raises(ConfigError, match="not a finished pretraining result.*run pretrain.py"):
        build_model(section, manifest, 2, 0, WAVE["frontend"])  # the old file is not taken for the new result
    log = stage("pretrain.py", wave, "--output-dir", out, "--set", "pretrain.epochs=40").stdout
    resumed = int(re.search(r"resumed after epoch (\d+)", log).group(1))
    assert 1 <= resumed < 40 and f"epoch {resumed + 1:>2}/40" in log and "epoch  1/40" not in log
    ckpt = load_tensors_only(path)
    assert ckpt["epochs"] == 40 and len(ckpt["losses"]) == 40 and len(_losses(out, "wave")) == 40
    assert json.loads((out / "pretrained" / "wave.record.json").read_text())["info"]["resumed_after"] == [resumed]
    again = stage("pretrain.py", wave, "--output-dir", out, "--set", "pretrain.epochs=40").stdout  # up to date
    assert "up to date, skipped" in again and f"resumed after epoch {resumed};" in again, again
    # the same result as an uninterrupted run, bit for bit (every generator is in the state)
    stage("pretrain.py", wave, "--output-dir", out, "--set", "pretrain.epochs=40", "--name", "whole")
    whole = load_tensors_only(out / "pretrained" / "whole.pt")
    assert whole["losses"] == ckpt["losses"]
    assert all(torch.equal(v, ckpt["state_dict"][k]) for k, v in whole["state_dict"].items())
    assert not (out / "pretrained" / "wave.state.pt").exists()
    assert not [p for p in (out / "pretrained").iterdir() if p.name.startswith(".")]  # no temporaries left
    build_model(section, manifest, 2, 0, WAVE["frontend"])
    # Ctrl-C in a run with no finished result yet: it says how to carry on, and fine-tuning from it says why not
    said = _kill_when(["pretrain.py", wave, "--output-dir", out, "--set", "pretrain.epochs=5000", "--name", "fresh"],
                      "epoch  2/5000", sig=signal.SIGINT)  # (40 epochs ended before the signal on a fast machine)
    assert "interrupted; finished artifacts are intact; run the same command again: it resumes after the last " \
           "finished epoch" in said
    fresh = dict(section, params=dict(section["params"], pretrained=str(out / "pretrained" / "fresh.pt")))
    with pytest.raises(ConfigError, match="fresh.state.pt beside it is: its pretrain.py run stopped before the end"):
        build_model(fresh, manifest, 2, 0, WAVE["frontend"])


def test_extra_audio_is_converted_aloud_hashed_and_never_the_competitions_own(toy, tmp_path):
    out, wave, _ = toy
    extra, rng = tmp_path / "extra", np.random.default_rng(1)
    extra.mkdir()
    sf.write(extra / "a.wav", 0.1 * rng.standard_normal(SR).astype(np.float32), SR)
    sf.write(extra / "b.flac", 0.1 * rng.standard_normal((2 * SR, 2)).astype(np.float32), 2 * SR)  # 16 kHz stereo
    run = ["pretrain.py", wave, "--output-dir", out, "--set", "pretrain.epochs=1", "--set",
           f"pretrain.extra_audio=[{extra}]", "--name", "ex"]
    log = stage(*run).stdout
    assert "extra (2 recordings)" in log
    assert "extra: 1 of 2 file(s) resampled to 8000 Hz (soxr_hq) from 16000 Hz (1)" in log
    assert "extra: 1 file(s) of several channels, mixed to mono (their mean)" in log
    assert "up to date, skipped" in stage(*run).stdout
    sf.write(extra / "a.wav", 0.1 * rng.standard_normal(SR).astype(np.float32), SR)  # other samples, same size
    assert "up to date" not in stage(*run).stdout
    assert len(_losses(out, "ex")) == 1
    log = stage("pretrain.py", wave, "--output-dir", out, "--set", "pretrain.epochs=1", "--set",
                "pretrain.crop_seconds=1.0", "--name", "long").stdout  # the clips are 0.5 s
    assert "pretrain.crop_seconds 1.0 s is longer than 26 of the 26 recordings: their views are padded" in log
    (extra / "cut.wav").write_bytes((extra / "a.wav").read_bytes()[:300])  # a WAV cut short: read as 1 ms before
    r = stage(*run, check=False)
    assert r.returncode == 1 and "pretrain.extra_audio: 1 file(s) cannot be used: " in r.stderr
    assert f"{extra / 'cut.wav'}: truncated" in r.stderr
    (extra / "cut.wav").unlink()
    sf.write(extra / "short.wav", 0.1 * rng.standard_normal(SR // 5).astype(np.float32), SR)  # 0.2 s < 0.5 s crops
    assert ("the crop (pretrain.crop_seconds: null, so audio.clip_seconds 0.5 s) is longer than 1 of the 29 recordings: "
            "their views are padded") in stage(*run).stdout  # said with the default crop too
    (extra / "short.wav").unlink()
    shutil.copy(out.parent / "data" / "test" / sorted(os.listdir(out.parent / "data" / "test"))[0], extra)
    r = stage(*run, "--set", "pretrain.splits=[train]", check=False)
    assert r.returncode == 1 and "pretrain.extra_audio: 1 of its 3 file(s) are the competition's own recordings" in r.stderr


def test_typos_and_mismatched_checkpoints_are_clear_errors(toy, tmp_path):
    out, wave, cached = toy
    for sets, expected in ((["pretrain.epoch=2"], "did you mean 'pretrain.epochs'"),
                           (["pretrain.method=moco"], "pretrain.method"),
                           (["pretrain.splits=[valid]"], "pretrain.splits"),
                           (["pretrain.crop_scale=[1.5, 0.6]"], "pretrain.crop_scale: [low, high] with low <= high expected"),
                           (["pretrain.lr=1000"], "non-finite weights or statistics after epoch"),
                           (["model.params.freeze_block=1"], "did you mean 'freeze_blocks'"),
                           (["model.params.pretrained=/nowhere/x.pt"], "is not a file (looked for /nowhere/x.pt"),
                           (["model.params.freeze_blocks=1"], "model.params freeze_blocks act on pretrained blocks, "
                                                              "but model.params.pretrained is not set")):
        args = [a for s in sets for a in ("--set", s)]
        r = stage("pretrain.py" if sets[0].startswith("pretrain") else "02_train.py", wave, "--output-dir", out, *args,
                  check=False)
        assert r.returncode == 1 and expected in r.stderr, (sets, r.stderr[-800:])
    assert not (out / "pretrained" / "wave.pt").exists()  # nothing of the diverged run is taken for finished
    r = stage("pretrain.py", cached, "--output-dir", out, "--set", f"pretrain.extra_audio=[{tmp_path}]", check=False)
    assert r.returncode == 1 and "pretrain.extra_audio needs waveform input" in r.stderr
    comp = yaml.safe_load((tmp_path / "data" / "toy.yaml").read_text())  # a competition without a test set
    for key in ("test", "submission"):
        comp.pop(key)
    (tmp_path / "no_test.yaml").write_text(yaml.safe_dump(comp))
    stage("00_prepare.py", tmp_path / "no_test.yaml", "--output-dir", tmp_path / "no_test")
    r = stage("pretrain.py", wave, "--output-dir", tmp_path / "no_test", "--set", "pretrain.splits=[test]", check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr and "this competition has no test set; add train" in r.stderr
    stage("pretrain.py", wave, "--output-dir", out)
    path = str(out / "pretrained" / "wave.pt")
    manifest = {"kind": "waveform", "sample_rate": SR, "n_scalars": 0, "name": "waveform", "settings": {"sample_rate": None}}
    cases = [({"channels": [8, 32]}, WAVE["frontend"], manifest, r"model.params.channels is \[8, 16\] in the checkpoint but \[8, 32\]"),
             ({"convs_per_block": 2}, WAVE["frontend"], manifest, "model.params.convs_per_block is 1 .* but 2"),
             ({}, {"name": "log_mel", "params": {"n_mels": 16, "n_fft": 256, "hop_length": 128}}, manifest,
              "frontend.params.hop_length is 64 in the checkpoint but 128"),
             ({}, None, {"kind": "spectrogram", "spec_shape": [1, 16, 63], "n_scalars": 0, "sample_rate": SR,
                         "name": "log_mel", "settings": {}}, "input.kind is 'waveform' in the checkpoint but 'spectrogram'")]
    for extra, frontend, man, expected in cases:
        params = dict(WAVE["model"]["params"], **extra, pretrained=path)
        with pytest.raises(ConfigError, match=expected):
            build_model({"name": "cnn", "params": params}, man, 2, 0, frontend)
    with pytest.raises(ConfigError, match="resnet.*not a pretrain.py|does not fit.*model.name is 'cnn'"):
        build_model({"name": "resnet", "params": {"widths": [8, 16], "pretrained": path}}, manifest, 2, 0, WAVE["frontend"])
    gem = dict(WAVE["model"]["params"], pooling="gem", pretrained=path)  # gem's exponent pool.p is not in the checkpoint
    with pytest.raises(ConfigError, match=r"lacks tensors of this model: \['pool.p'\]: the pooling differs \(the "
                                          r"checkpoint's model.params.pooling is its model default\); use that pooling"):
        build_model({"name": "cnn", "params": gem}, manifest, 2, 0, WAVE["frontend"])
    with pytest.raises(ConfigError, match="freeze_blocks=3: cnn has 2 blocks"):
        build_model({"name": "cnn", "params": dict(WAVE["model"]["params"], freeze_blocks=3, pretrained=path)},
                    manifest, 2, 0, WAVE["frontend"])
    assert os.path.exists(path)
    # the options without a checkpoint: refused for training (above, 02), never for reloading a fold or loading
    # the config (pretrain.py reads it before its checkpoint exists)
    build_model({"name": "cnn", "params": dict(WAVE["model"]["params"], freeze_blocks=1)}, manifest, 2, 0,
                WAVE["frontend"], pretrained=False)
    from lib.components import load_experiment

    assert load_experiment(wave, ["model.params.backbone_lr=0.3"])["model"]["params"]["backbone_lr"] == 0.3
    alone = tmp_path / "alone.pt"  # copied without its record
    shutil.copy(path, alone)
    fold = tmp_path / "fold0.pt"  # a fine-tuned fold's file: tensors and plain values, not pretrain.py's format
    torch.save({"state_dict": load_tensors_only(path)["state_dict"], "fold": 0, "manifest": manifest}, fold)
    for given, expected in ((alone, "alone.pt has no record beside it \\(alone.record.json.*copy the two together"),
                            (fold, "fold0.pt is not a pretrain.py checkpoint .* \\(a fold model of 02_train.py\\)")):
        with pytest.raises(ConfigError, match=expected):
            build_model({"name": "cnn", "params": dict(WAVE["model"]["params"], pretrained=str(given))}, manifest, 2, 0,
                        WAVE["frontend"])


def test_other_pretrained_weights_at_the_same_path_change_the_training_key(tmp_path):
    """A timm or PANNs file replaced by other weights at the same path left 02 "up to date" with
    the models fine-tuned from the old ones (only pretrain.py records were in the key); the file's,
    or a Hugging Face folder's, SHA-256 now is. Nothing given or found: no part of the key."""
    from lib.models.pretrained_weights import pretrained_id

    weights, folder = tmp_path / "weights.pth", tmp_path / "hf"
    torch.save({"fc.weight": torch.zeros(2, 2)}, weights)
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"a")
    ids = [pretrained_id({"params": {"pretrained": str(p)}}) for p in (weights, folder)]
    torch.save({"fc.weight": torch.ones(2, 2)}, weights)
    (folder / "model.safetensors").write_bytes(b"b")
    again = [pretrained_id({"params": {"pretrained": str(p)}}) for p in (weights, folder)]
    assert None not in ids and ids[0] != again[0] and ids[1] != again[1]
    assert pretrained_id({"params": {"pretrained": str(weights)}}) == again[0]  # the same bytes: the same id
    assert pretrained_id({"params": {}}) is None and pretrained_id({"params": {"pretrained": str(tmp_path / "no")}}) is None
