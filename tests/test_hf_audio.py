"""Hugging Face audio models from a local folder: tiny randomly initialised wav2vec 2.0, HuBERT and
AST models saved with ``save_pretrained`` (plumbing only, never a download): the ``hf_embeddings``
cache equals transformers' own forward on the resampled windows, ``hf_audio`` fine-tunes through
stages 02/03 and its checkpoints predict without the folder, freezing and learning-rate groups,
and the errors."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import make_toy_competition, stage

transformers = pytest.importorskip("transformers", reason="transformers is not installed (requirements.txt has it)")

from lib.core.errors import ConfigError  # noqa: E402
from lib.core.paths import Outputs  # noqa: E402
from lib.data import audio  # noqa: E402
from lib.features import FEATURES  # noqa: E402
from lib.features.cache import build_feature_set, load_features  # noqa: E402
from lib.models import build_model  # noqa: E402
from lib.training.optim import build_optimizer  # noqa: E402

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
CONV = dict(conv_dim=(16, 16, 16), conv_stride=(5, 4, 4), conv_kernel=(10, 8, 4), num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2, mask_time_length=2)
WAVE = {"kind": "waveform", "n_scalars": 2, "sample_rate": 16000}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """``{"wav2vec2", "hubert", "ast": folder}``: tiny random models as ``save_pretrained`` writes them."""
    from transformers import (ASTConfig, ASTFeatureExtractor, ASTModel, HubertConfig, HubertModel, Wav2Vec2Config,
                              Wav2Vec2FeatureExtractor, Wav2Vec2Model)

    root, out = tmp_path_factory.mktemp("hf"), {}
    torch.manual_seed(0)
    for name, model, fe in (
            ("wav2vec2", Wav2Vec2Model(Wav2Vec2Config(**SMALL, **CONV)), Wav2Vec2FeatureExtractor(do_normalize=True)),
            ("hubert", HubertModel(HubertConfig(**SMALL, **CONV)), Wav2Vec2FeatureExtractor(do_normalize=False)),
            ("ast", ASTModel(ASTConfig(**SMALL, num_mel_bins=32, max_length=64, frequency_stride=16, time_stride=16)),
             ASTFeatureExtractor(num_mel_bins=32, max_length=64))):
        model.save_pretrained(root / name)
        fe.save_pretrained(root / name)
        out[name] = root / name
    return out


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def _reference(folder, y: np.ndarray, sr: int, layer):
    """transformers' own forward: the window resampled to 16 kHz, the feature extractor, the model."""
    from transformers import AutoFeatureExtractor, AutoModel

    fe = AutoFeatureExtractor.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    x = audio.resample(y, sr, 16000)
    with torch.no_grad():
        hs = model(**fe(list(x), sampling_rate=16000, return_tensors="pt"), output_hidden_states=True).hidden_states
    return (torch.stack(hs).mean(0) if layer == "mean" else hs[layer]).numpy()


def test_cached_embeddings_equal_transformers_forward(folders, tmp_path):
    comp = make_toy_competition(tmp_path / "data", n=6, sr=8000)  # 8 kHz files: resampled to the model's 16 kHz
    out = Outputs(tmp_path / "out")
    from lib.data.prepare import prepare

    prepare(comp, out.root)
    table = out.load_split("train")
    y = np.stack([audio.load(p)[0] for p in table["path"]])
    for layer, index, workers in ((0, 0, 1), (-1, 2, 2), ("middle", 1, 1), ("mean", "mean", 1)):
        section = {"name": "hf_embeddings", "set": f"w{layer}", "params": {"model_dir": str(folders["wav2vec2"]),
                                                                          "layer": layer, "pooling": "frames"}}
        m = build_feature_set(out, section, workers=workers)
        spec, scalars, _, man = load_features(out, section["set"], "train")
        ref = _reference(folders["wav2vec2"], y, 8000, index)  # (n, frames, 32)
        assert spec.shape == (6, 1, 32, ref.shape[1]) and scalars.shape == (6, 0)
        np.testing.assert_allclose(spec[:, 0].transpose(0, 2, 1), ref, atol=2e-5)
        assert man["sample_rate"] == 8000 and man["settings"]["model_sample_rate"] == 16000
        assert m["hop_length"] == 80 * 8000 / 16000  # 80 samples at 16 kHz between frames
    # the test set dropped: the train split is kept and nothing computed, and the manifest keeps the hop the
    # extractor learnt from it (it said null: review)
    prepare(dict(comp, test=None, submission=None), out.root)
    kept = build_feature_set(out, section)
    assert "the train features are kept" in kept["because"] and list(kept["splits"]) == ["train"], kept
    assert kept["hop_length"] == 40 and load_features(out, section["set"], "train")[3]["hop_length"] == 40
    pooled = build_feature_set(out, {"name": "hf_embeddings", "set": "p", "params": {
        "model_dir": str(folders["hubert"]), "layer": -1, "pooling": "mean_std"}})
    _, scalars, _, _ = load_features(out, "p", "train")
    ref = _reference(folders["hubert"], y, 8000, -1)
    assert pooled["n_scalars"] == 64 and pooled["spec_shape"] == [1, 1, 1]
    np.testing.assert_allclose(scalars, np.concatenate([ref.mean(1), ref.std(1)], 1), atol=2e-5)
    reduced = FEATURES.build({"name": "hf_embeddings", "params": {"model_dir": str(folders["wav2vec2"]), "reduce": 8}})
    assert reduced.batch(y[:2], 8000)[0].shape[:3] == (2, 1, 8)
    with pytest.raises(ConfigError, match="features.params.reduce 32 is not below the model's hidden size 32"):
        FEATURES.build({"name": "hf_embeddings", "params": {"model_dir": str(folders["wav2vec2"]), "reduce": 32}})
    # weights of another size beside the config: refused before the set's finished cache is touched
    foreign = tmp_path / "foreign"
    shutil.copytree(folders["hubert"], foreign)
    transformers.HubertModel(transformers.HubertConfig(**dict(SMALL, hidden_size=48), **CONV)).save_pretrained(
        tmp_path / "wide")
    shutil.copy(tmp_path / "wide/model.safetensors", foreign / "model.safetensors")
    with pytest.raises(ConfigError, match=r"features.params.model_dir: .* of another shape \(e.g. .* \[48(, 48)?\] in "
                                          r"the file, \[32(, 32)?\] in the model"):
        build_feature_set(out, {"name": "hf_embeddings", "set": "p", "params": {
            "model_dir": str(foreign), "layer": -1, "pooling": "mean_std"}})
    assert out.features_record("p").check()[0] is not None


def test_ast_patches_become_time_frames(folders):
    from transformers import AutoFeatureExtractor, AutoModel

    y = np.random.default_rng(0).standard_normal((2, 8000)).astype(np.float32) * 0.1  # 0.5 s: 48 of 64 fbank frames
    f = FEATURES.build({"name": "hf_embeddings", "params": {"model_dir": str(folders["ast"]), "layer": -1}})
    spec, _ = f.batch(y, 16000)
    fe = AutoFeatureExtractor.from_pretrained(folders["ast"], local_files_only=True)
    with torch.no_grad():
        h = AutoModel.from_pretrained(folders["ast"], local_files_only=True)(
            **fe(list(y), sampling_rate=16000, return_tensors="pt"), output_hidden_states=True).hidden_states[-1]
    patches = h[:, 2:].reshape(2, 2, 4, 32).mean(1)[:, :3]  # 2 x 4 patches; the 4th in time starts in the padding
    np.testing.assert_allclose(spec[:, 0].transpose(0, 2, 1), patches.numpy(), atol=2e-5)
    assert f.hop_length == 16 * 160
    # 64 frames of 10 ms: windows up to 0.655 s are heard whole; longer ones would be cut, refused (probe)
    f.check_window(0.655)
    with pytest.raises(ConfigError, match=r"this AST hears 0.655 s at most .* max_length 64 .* audio.clip_seconds 1 s"):
        f.check_window(1.0)


def test_fine_tuning_trains_and_predicts_without_the_folder(folders, tmp_path):
    make_toy_competition(tmp_path / "data", n=8, sr=8000)  # the model hears 16 kHz: 01 resamples, aloud
    out = tmp_path / "out"
    stage("00_prepare.py", tmp_path / "data/toy.yaml", "--output-dir", out)
    pretrained = tmp_path / "w2v"
    shutil.copytree(folders["wav2vec2"], pretrained)
    exp = tmp_path / "hf.yaml"
    exp.write_text(yaml.safe_dump({
        "features": {"name": "waveform", "set": "wave16k", "params": {"sample_rate": 16000}},
        "model": {"name": "hf_audio", "params": {"pretrained": str(pretrained), "freeze_blocks": 1, "layer": "weighted",
                                                 "pooling": "attention"}},
        "augment": {"spec_augment": {"p": 0.0}}, "train": {"epochs": 2, "batch_size": 4, "device": "cpu"}}))
    log = stage("01_features.py", exp, "--output-dir", out).stdout
    assert "whole waveforms at 16000 Hz (resampled explicitly from the files' rates, soxr_hq)" in log, log
    assert "model hf_audio, waveform 16000 Hz (the model's own input layers);" in stage("02_train.py", exp,
                                                                                         "--output-dir", out).stdout
    stage("03_infer.py", exp, "--output-dir", out)
    first = pd.read_csv(out / "preds" / "hf.csv")
    shutil.rmtree(pretrained)  # prediction needs the fold checkpoints only
    stage("03_infer.py", exp, "--output-dir", out, "--force")
    pd.testing.assert_frame_equal(pd.read_csv(out / "preds" / "hf.csv"), first)
    ckpt = torch.load(out / "models" / "hf" / "fold0.pt", weights_only=True)
    assert json.loads(bytes(ckpt["state_dict"]["trunk.hf_config"].tolist()))["config"]["model_type"] == "wav2vec2"


def test_a_bundle_carries_the_model_folder_its_embeddings_need(folders, tmp_path):
    """An hf_embeddings member bundled, then the folder moved away (as on a notebook machine): the
    bundle predicts what 04 submitted from the copy it carries; a folder changed since training
    is refused by 05 before any bundle is made."""
    from lib.shipping.bundle import predict_bundle

    make_toy_competition(tmp_path / "data", n=8)
    out, model_dir = tmp_path / "out", tmp_path / "w2v"
    stage("00_prepare.py", tmp_path / "data/toy.yaml", "--output-dir", out)
    shutil.copytree(folders["wav2vec2"], model_dir)
    exp = tmp_path / "emb.yaml"
    exp.write_text(yaml.safe_dump({"features": {"name": "hf_embeddings", "set": "emb", "params": {
        "model_dir": str(model_dir), "layer": -1, "pooling": "mean"}}, "model": {"name": "logreg", "params": {}}}))
    for script in ("01_features.py", "02_train.py", "03_infer.py", "04_ensemble.py"):
        stage(script, *([exp] if script != "04_ensemble.py" else []), "--output-dir", out)
    (model_dir / "config.json").write_text((model_dir / "config.json").read_text() + "\n")
    r = stage("05_bundle.py", "--to", tmp_path / "bundle", "--output-dir", out, check=False)
    assert r.returncode != 0 and "has other files than those its models were trained on" in r.stderr, r.stderr
    assert not (tmp_path / "bundle").exists() and not (tmp_path / ".bundle.partial").exists()  # nothing left behind
    shutil.rmtree(model_dir)
    shutil.copytree(folders["wav2vec2"], model_dir)  # as at training
    stage("05_bundle.py", "--to", tmp_path / "bundle", "--output-dir", out)
    shutil.rmtree(model_dir)
    r = predict_bundle(tmp_path / "bundle", tmp_path / "data", tmp_path / "work", device="cpu", workers=1, log=lambda *_: None)
    assert pd.read_csv(r["submission"]).equals(pd.read_csv(out / "submission.csv"))
    np.testing.assert_allclose(pd.read_csv(tmp_path / "work/preds/emb.csv").filter(like="p_"),
                               pd.read_csv(out / "preds/emb.csv").filter(like="p_"), atol=1e-6)


def test_freezing_and_learning_rate_groups(folders):
    model = build_model({"name": "hf_audio", "params": {"pretrained": str(folders["hubert"]), "freeze_blocks": 2,
                                                        "backbone_lr": 0.1, "layer_decay": 0.5, "layer": 1}}, WAVE, 3)
    enc = model.trunk.encoder
    frozen = [enc.feature_extractor, enc.feature_projection, enc.encoder.pos_conv_embed, enc.encoder.layers[0]]
    assert all(not p.requires_grad for m in frozen for p in m.parameters()) and not enc.masked_spec_embed.requires_grad
    assert all(p.requires_grad for p in enc.encoder.layers[1].parameters())
    model.train()
    assert not any(m.training for m in frozen) and enc.encoder.layers[1].training
    blocks = model.trunk.block_params()
    assert sum(map(len, blocks)) == len(list(enc.parameters()))  # every backbone parameter is in one block
    opt = build_optimizer({"name": "adamw", "params": {"lr": 1e-3}}, model.param_groups())
    np.testing.assert_allclose([g["lr"] for g in opt.param_groups], [1e-4, 1e-3])  # layer 2 (the last block), head
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in opt.param_groups for p in g["params"]} == trainable
    out = model.eval()(torch.randn(2, 8000), torch.randn(2, 2))
    assert out["logits"].shape == (2, 3) and out["embedding"].shape == (2, 2 * 32 + 64)


def test_errors_name_the_key(folders, tmp_path):
    def features(path, **params):
        FEATURES.build({"name": "hf_embeddings", "params": {"model_dir": str(path), **params}})

    def model(path, sample_rate=16000, **params):
        build_model({"name": "hf_audio", "params": {"pretrained": str(path), **params}}, dict(WAVE, sample_rate=sample_rate), 2)

    layout = "Nothing is downloaded.*config.json, model.safetensors.*preprocessor_config.json"
    with pytest.raises(ConfigError, match=f"features.params.model_dir: .* is not a folder. {layout}"):
        features(tmp_path / "missing")
    with pytest.raises(ConfigError, match=r"is not a folder \(looked for /.*/missing: a relative path is taken from the "
                                          r"folder the stage runs in, the project folder under run_all.sh\)"):
        features("missing")
    with pytest.raises(ConfigError, match=f"model.params.pretrained: .* is not a folder. {layout}"):
        model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=f"model.params.pretrained: .* has no config.json. {layout}"):
        model(tmp_path / "empty")
    snapshot = tmp_path / "hub" / "snapshots" / "0a1b2c"  # the model one level down, or in a hub cache's snapshot
    shutil.copytree(folders["wav2vec2"], snapshot)
    with pytest.raises(ConfigError, match=rf"hub' has no config.json \(a folder below it has one: {snapshot}; give that "
                                          r"folder, a Hugging Face cache snapshot\)"):
        features(tmp_path / "hub")
    shutil.copytree(folders["wav2vec2"], tmp_path / "unzipped" / "wav2vec2-base")
    with pytest.raises(ConfigError, match=rf"has no config.json \(a folder below it has one: {tmp_path}/unzipped/"
                                          r"wav2vec2-base; give that folder\)"):
        model(tmp_path / "unzipped")
    no_weights = tmp_path / "no_weights"
    shutil.copytree(folders["wav2vec2"], no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="features.params.model_dir: .* has no weights"):
        features(no_weights)
    for model_type, match in (("nonsense", "transformers cannot build a model"), ("bert", "model type 'bert' is not supported")):
        odd = tmp_path / model_type
        shutil.copytree(folders["wav2vec2"], odd)
        (odd / "config.json").write_text(json.dumps({"model_type": model_type}))
        with pytest.raises(ConfigError, match=f"model.params.pretrained: .*{match}") as exc:
            model(odd)
        assert "audio-spectrogram-transformer" not in str(exc.value)  # hf_audio's own list: no AST
    ctc = tmp_path / "ctc"  # a CTC checkpoint without the masking-only weight (as wav2vec2-base-960h ships) loads
    shutil.copytree(folders["wav2vec2"], ctc)
    from safetensors.torch import load_file, save_file

    weights = load_file(ctc / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.endswith("masked_spec_embed")}, ctc / "model.safetensors",
              metadata={"format": "pt"})
    from lib.features.hf_embeddings import load_model

    assert load_model(ctc, "features.params.model_dir") is not None
    foreign = tmp_path / "foreign"  # BERT's weights beside wav2vec2's config: transformers would start it at random
    shutil.copytree(folders["wav2vec2"], foreign)
    transformers.BertModel(transformers.BertConfig(**SMALL, vocab_size=50)).save_pretrained(tmp_path / "bert")
    shutil.copy(tmp_path / "bert/model.safetensors", foreign / "model.safetensors")
    with pytest.raises(ConfigError, match=r"model.params.pretrained: .* leave \d+ of the model's weights out.*another"):
        model(foreign)
    with pytest.raises(ConfigError, match=r"features.params.model_dir: .* leave \d+ of the model's weights out"):
        FEATURES.build({"name": "hf_embeddings", "params": {"model_dir": str(foreign)}}).prepare()
    wider = tmp_path / "wider"  # WavLM's weights (wav2vec2's and 2-3 more per layer) beside wav2vec2's config:
    shutil.copytree(folders["wav2vec2"], wider)  # transformers dropped the extra ones and ran another model (probe)
    transformers.WavLMModel(transformers.WavLMConfig(**SMALL, **CONV)).save_pretrained(tmp_path / "wavlm")
    shutil.copy(tmp_path / "wavlm/model.safetensors", wider / "model.safetensors")
    extra = r": .* holds \d+ weights inside the model's own modules that it does not have \(e.g. encoder\.layers\.0\."
    with pytest.raises(ConfigError, match="model.params.pretrained" + extra):
        model(wider)
    with pytest.raises(ConfigError, match="features.params.model_dir" + extra):
        FEATURES.build({"name": "hf_embeddings", "params": {"model_dir": str(wider)}}).prepare()
    head = tmp_path / "head"  # a CTC head beside the model (as wav2vec2-base-960h ships): ignored, loads
    transformers.Wav2Vec2ForCTC(transformers.Wav2Vec2Config(**SMALL, **CONV, vocab_size=12)).save_pretrained(head)
    shutil.copy(folders["wav2vec2"] / "preprocessor_config.json", head)
    assert load_model(head, "features.params.model_dir") is not None
    with pytest.raises(ConfigError, match="model.params.pretrained: model type 'audio-spectrogram-transformer' is not"):
        model(folders["ast"])
    with pytest.raises(ConfigError, match="hears 16000 Hz audio.*at 8000 Hz: set features.params.sample_rate: 16000"):
        model(folders["wav2vec2"], sample_rate=8000)
    with pytest.raises(ConfigError, match="model.params.layer: layer 5 is not an index .* or one of middle, mean, weighted"):
        model(folders["wav2vec2"], layer=5)
    with pytest.raises(ConfigError, match="features.params.pooling 'max'"):
        features(folders["wav2vec2"], pooling="max")
    with pytest.raises(ConfigError, match="features.params.batch_size 0 must be a positive"):
        features(folders["wav2vec2"], batch_size=0)
    with pytest.raises(ConfigError, match="model.params.pretrained is required.*Nothing|model.params.pretrained is required"):
        from lib.models.hf_audio import HfAudio

        HfAudio.check_params({})


def test_fine_tuned_model_exports_to_onnx(folders, tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (requirements.txt has it)")
    pytest.importorskip("onnxscript", reason="onnxscript (torch.onnx's exporter) is not installed")
    from lib.shipping.onnx_export import ATOL, export_onnx

    model = build_model({"name": "hf_audio", "params": {"pretrained": str(folders["wav2vec2"])}}, WAVE, 2).eval()
    assert export_onnx(model, dict(WAVE, clip_seconds=0.5), 2, tmp_path / "m.onnx") <= ATOL


def test_without_transformers_the_error_says_what_to_install(monkeypatch):
    """A prediction environment without transformers (requirements-infer.txt lacked it): one line
    saying what to install, not a ModuleNotFoundError traceback."""
    import sys

    from lib.core.config import ROOT
    from lib.features.hf_embeddings import offline

    monkeypatch.setitem(sys.modules, "transformers.utils", None)
    with pytest.raises(ConfigError, match="need the transformers package: pip install -r requirements-infer.txt"):
        offline()
    assert any(line.startswith("transformers") for line in (ROOT / "requirements-infer.txt").read_text().splitlines())
