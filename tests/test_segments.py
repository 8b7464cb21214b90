"""Segments (ICBHI cycles, MAIC tokens) and precomputed matrices: reading, errors naming file and
line, crops that stay inside their segment, per-segment predictions aggregated to the unit, and
every stage on competitions laid out as the seed datasets ship (made from real breathing clips)."""
import json
import re

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import yaml
from conftest import ROOT, stage, require_breathing
from seed_formats import make_icbhi, make_maic

from lib.core.config import read_competition
from lib.core.errors import AudioError, ConfigError, InputError
from lib.data.matrix import read_matrix
from lib.data.prepare import prepare
from lib.data.segments import regions
from lib.inference.predict import aggregate_windows
from lib.inputs.waveforms import WaveData

ICBHI = yaml.safe_load((ROOT / "configs/data/icbhi_breathing.yaml").read_text()) | {"folds": {"n_folds": 3}}
MAIC = yaml.safe_load((ROOT / "configs/data/maic_breathing.yaml").read_text()) | {"folds": {"n_folds": 3}}


def _config(tmp_path, cfg: dict, data_dir, name: str):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(dict(cfg, name=name)))
    return read_competition(path, data_dir)[0], path


@pytest.fixture
def icbhi(tmp_path):
    require_breathing()
    return make_icbhi(tmp_path / "icbhi", sessions=8)


@pytest.fixture
def maic(tmp_path):
    require_breathing()
    return make_maic(tmp_path / "maic", sessions=8)


def test_icbhi_cycles_become_rows_of_their_patient(icbhi, tmp_path):
    cfg, _ = _config(tmp_path, ICBHI, icbhi, "icbhi")
    assert cfg["segments"]["unit"] == "segment" and cfg["folds"]["scheme"] == "stratified_group"
    prepare(cfg, tmp_path / "out")
    folds = pd.read_csv(tmp_path / "out" / "folds.csv", dtype={"id": str, "group": str})
    n_cycles = sum(len((icbhi / "audio" / f"{r}.txt").read_text().split("\n")) - 1
                   for r in pd.read_csv(icbhi / "train.csv").recording)
    assert len(folds) == n_cycles and folds.id.str.contains("#").all()
    assert (folds.groupby("group").fold.nunique() == 1).all()  # a patient's cycles in one fold
    assert set(folds.target) == {"inhale", "exhale"}
    assert np.allclose(folds.duration_s, folds.end_s - folds.start_s) and (folds.duration_s > 0.5).all()
    test = pd.read_csv(tmp_path / "out" / "test.csv")
    assert set(test.id) == set(pd.read_csv(icbhi / "sample_submission.csv").id)
    # cycles longer than the clip are noted as segments (the note was left out for segments, review)
    _, path = _config(tmp_path, ICBHI | {"audio": {"clip_seconds": 0.5}}, icbhi, "short")
    log = stage("00_prepare.py", path, "--data-dir", icbhi, "--output-dir", tmp_path / "out2").stdout
    assert f"note: {len(folds)} training segments and " in log and " test segments are longer than 0.5 s" in log


def test_icbhi_cycles_as_regions_of_recordings_labelled_in_their_row(tmp_path):
    """ICBHI annotations with ``unit: recording``: the cycles are the stretches a recording's windows
    come from, its label is its CSV row's (the diagnosis); no 0/1 columns named (they were required)."""
    data = tmp_path / "data"
    (data / "audio").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(6):
        sf.write(data / "audio" / f"r{k}.wav", 0.1 * rng.standard_normal(8000 * 3).astype(np.float32), 8000)
        (data / "audio" / f"r{k}.txt").write_text("0.1\t1.2\t0\t1\n1.3\t2.8\t1\t0\n")
    pd.DataFrame({"recording": [f"r{k}" for k in range(6)], "diagnosis": ["copd", "healthy"] * 3}).to_csv(
        data / "train.csv", index=False)
    cfg = {"task": "binary", "audio": {"clip_seconds": 1.0}, "folds": {"n_folds": 2},
           "train": {"csv": "train.csv", "id_column": "recording", "target_column": "diagnosis",
                     "audio": {"template": "audio/{id}.wav"}},
           "segments": {"format": "icbhi", "file": "audio/{id}.txt", "unit": "recording"}}
    comp, _ = _config(tmp_path, cfg, data, "diag")
    assert comp["segments"]["unit"] == "recording"
    prepare(comp, tmp_path / "out")
    folds = pd.read_csv(tmp_path / "out" / "folds.csv")
    assert folds.id.tolist() == [f"r{k}" for k in range(6)] and set(folds.target) == {"copd", "healthy"}
    assert (folds.segments == "0.100000:1.200000 1.300000:2.800000").all()
    with pytest.raises(ConfigError, match="unit segment needs the segments' labels.*format icbhi has two 0/1"):
        _config(tmp_path, dict(cfg, segments=dict(cfg["segments"], unit="segment")), data, "seg")
    with pytest.raises(ConfigError, match="bad_test_files: silence is for competitions of whole audio files; this "
                                          "one has segments"):
        _config(tmp_path, dict(cfg, audio={"clip_seconds": 1.0, "bad_test_files": "silence"}), data, "sil")
    with pytest.raises(ConfigError, match="format icbhi has no class column"):
        _config(tmp_path, dict(cfg, segments=dict(cfg["segments"], label_column="x")), data, "lc")


def test_birdclef_style_chunks_of_test_soundscapes_with_their_row_ids(tmp_path):
    """A test set of long soundscapes scored per 5-s chunk with ids ``<stem>_<end second>``: the
    chunks listed in the segments table (their label cells empty, which were errors) and
    ``segments.row_id: "{stem}_{end}"`` give the submission's rows (they were ``<recording>#<k>``,
    renamed by hand: probe). Each chunk's row is predicted from its own stretch."""
    data = tmp_path / "data"
    for d in ("train", "test"):
        (data / d).mkdir(parents=True)
    rng = np.random.default_rng(0)
    sr, t = 8000, np.arange(8000 * 2) / 8000
    rows, segs = [], []
    for k in range(20):  # 2-s clips: bird a (a 1 kHz tone) or b (a 3 kHz tone)
        bird = "ab"[k % 2]
        y = 0.05 * rng.standard_normal(len(t)) + 0.3 * np.sin(2 * np.pi * (1000 if bird == "a" else 3000) * t)
        sf.write(data / "train" / f"c{k}.ogg", y.astype(np.float32), sr)
        rows.append({"filename": f"c{k}.ogg", "primary_label": bird})
        segs.append({"recording": f"c{k}.ogg", "start": 0, "end": 2, "a": int(bird == "a"), "b": int(bird == "b")})
    pd.DataFrame(rows).to_csv(data / "train.csv", index=False)
    for name in ("sc1", "sc2"):  # 15-s soundscapes, bird a only in sc1's second chunk (5-10 s); sc2 is 2 samples
        y = 0.05 * rng.standard_normal(sr * 15 - 2 * (name == "sc2"))  # short: still sc2_15 (was sc2_14.9998: probe)
        if name == "sc1":
            y[sr * 5:sr * 10] += 0.3 * np.sin(2 * np.pi * 1000 * np.arange(sr * 5) / sr)
        sf.write(data / "test" / f"{name}.ogg", y.astype(np.float32), sr)
        segs += [{"recording": f"{name}.ogg", "start": s, "end": s + 5, "a": "", "b": ""} for s in (0, 5, 10)]
    sf.write(data / "test" / "sc3.ogg", 0.05 * rng.standard_normal(sr * 12).astype(np.float32), sr)  # 12 s: its
    segs += [{"recording": "sc3.ogg", "start": s, "end": s + 5, "a": "", "b": ""} for s in (0, 5, 10)]  # last chunk
    pd.DataFrame({"filename": ["sc1.ogg", "sc2.ogg", "sc3.ogg"]}).to_csv(data / "test.csv", index=False)  # is 10-12 s
    pd.DataFrame(segs).to_csv(data / "segments.csv", index=False)
    ids = [f"{n}_{e}" for n in ("sc1", "sc2", "sc3") for e in (5, 10, 15)]
    pd.DataFrame({"row_id": ids, "a": 0.5, "b": 0.5}).to_csv(data / "sample_submission.csv", index=False)
    cfg = {"task": "multilabel", "metric": "auroc", "metrics": ["auroc", "macro_f1"], "decision": {"threshold": 0.4},
           "audio": {"clip_seconds": 2.0, "hop_seconds": 1.0},
           "folds": {"n_folds": 2},
           "train": {"csv": "train.csv", "id_column": "filename", "audio": {"template": "train/{id}"}},
           "test": {"csv": "test.csv", "id_column": "filename", "audio": {"template": "test/{id}"}},
           "segments": {"format": "csv", "csv": "segments.csv", "id_column": "recording", "labels": ["a", "b"],
                        "row_id": "{stem}_{end}"},
           "submission": {"sample": "sample_submission.csv", "id_column": "row_id", "format": "probabilities"}}
    comp, path = _config(tmp_path, cfg, data, "birds")
    pd.DataFrame({"row_id": [*ids[:-1], "sc3_14"], "a": 0.5, "b": 0.5}).to_csv(data / "sample_submission.csv", index=False)
    with pytest.raises(InputError, match=re.escape(f"1 sample ids not among the test set's ids (its segments, "
                                                   f"{data / 'segments.csv'}), e.g. ['sc3_14']")):
        prepare(comp, tmp_path / "out0")  # (a probe: it named test.csv, where the segment ids are not)
    pd.DataFrame({"row_id": ids, "a": 0.5, "b": 0.5}).to_csv(data / "sample_submission.csv", index=False)
    with pytest.raises(ConfigError, match=r"target_column\(s\) or target_from would not be read: with segments.unit"):
        _config(tmp_path, dict(cfg, train=dict(cfg["train"], target_column="primary_label")), data, "birds2")
    for row_id, match in (("{stem}_{ends}", "row_id '{stem}_{ends}': KeyError"),  # at load, before any audio
                          ("{end:d}", "row_id '{end:d}': ValueError")):  # seconds are no integers
        with pytest.raises(ConfigError, match=match):
            _config(tmp_path, dict(cfg, segments=dict(cfg["segments"], row_id=row_id)), data, "birds3")
    with pytest.raises(ConfigError, match="row_id names segment rows, but the rows are recordings"):
        _config(tmp_path, dict(cfg, segments={k: v for k, v in cfg["segments"].items() if k != "labels"},
                               train=dict(cfg["train"], target_column="primary_label")), data, "b4")
    from lib.data.segments import format_row_id
    assert [format_row_id(t, "a/sc1.ogg", 2, 10.0, 15.0) for t in ("{stem}_{end}", "{stem}_{end:.1f}", "{recording}#{segment}",
                                                                    "{end:>4}", "{end:04}", "{segment:03d}")
            ] == ["sc1_15", "sc1_15.0", "a/sc1.ogg#2", "  15", "0015", "002"]
    assert format_row_id("{end}", "r", 0, 0.0, 1234.5625) == "1234.5625"  # not 6 digits (:g), which merged ids
    with pytest.raises(ConfigError, match=r"row_id '{segment\[0\]}'"):  # a TypeError, as a config error
        format_row_id("{segment[0]}", "r", 0, 0.0, 5.0)
    out = tmp_path / "out"
    logreg = ROOT / "configs/zoo/logreg.yaml"
    for script, *args in (("00_prepare.py", path, "--data-dir", data), ("01_features.py", logreg),
                          ("02_train.py", logreg), ("03_infer.py", logreg), ("04_ensemble.py",)):
        log = stage(script, *args, "--output-dir", out).stdout
        if script == "00_prepare.py":  # sc3_15, BirdCLEF's id of a last chunk that is shorter (was refused: probe)
            assert "segments (test): 1 segment(s) end after their recording (a last, shorter chunk)" in log
        if script == "04_ensemble.py":  # thresholds scored on macro_f1 are not applied to probabilities (probe)
            assert "decision on macro_f1" in log and "(not applied to the submission: submission.format " \
                "probabilities writes the probabilities" in log, log
    test_rows = pd.read_csv(out / "test.csv")
    assert test_rows.id.tolist() == ids and tuple(test_rows.set_index("id").loc["sc3_15", ["start_s", "end_s"]]) == (10, 12)
    sub = pd.read_csv(out / "submission.csv")
    assert sub.row_id.tolist() == ids and sub.set_index("row_id")["a"].idxmax() == "sc1_10"
    segs[0]["end"] = 2.5  # a training segment past its recording's end is still an error
    pd.DataFrame(segs).to_csv(data / "segments.csv", index=False)
    with pytest.raises(InputError, match=r"segments.csv line 2: segment 0-2.5 s lies outside its recording") as caught:
        prepare(comp, tmp_path / "out2")
    said = str(caught.value)  # (a probe: "(1 skipped)" read as segments.skip; nothing said what to write)
    assert "s); a training segment may end at most 10 ms after its recording: write its exact end, not a rounded one" in said
    assert re.search(r"has no segment left \(1 with a problem above\)", said) and "skipped" not in said, said
    segs[0]["end"] = 2
    segs[0]["a"] = ""  # a training segment's label cell may not be empty
    pd.DataFrame(segs).to_csv(data / "segments.csv", index=False)
    with pytest.raises(InputError, match=r"segments.csv line 2: empty \['a'\] \(a training segment's labels"):
        prepare(comp, tmp_path / "out2")
    pd.DataFrame(segs).rename(columns={"start": "begin"}).to_csv(data / "segments.csv", index=False)
    with pytest.raises(InputError) as caught:  # one problem, not one per recording after it (probe: 80 lines)
        prepare(comp, tmp_path / "out3")
    assert [str(p) for p in caught.value.problems] == [
        f"{data / 'segments.csv'}: missing column(s) ['start']; found ['recording', 'begin', 'end', 'a', 'b']"]


def test_segment_errors_name_file_and_line(icbhi, tmp_path):
    cfg, _ = _config(tmp_path, ICBHI, icbhi, "icbhi")
    txt = sorted((icbhi / "audio").glob("*.txt"))[0]
    lines = txt.read_text().splitlines()
    lines[1] = "2.0\t2.0\t0\t0"  # zero length
    lines[2] = "1.0\tx\t0\t0"  # not a number
    lines[3] = "900\t901\t1\t0"  # outside the recording
    lines.append("1\t2\t2\t0")  # a label that is not 0/1
    txt.write_text("\n".join(lines) + "\n")
    latin, bom = sorted((icbhi / "audio").glob("*.txt"))[1:3]
    latin.write_bytes(latin.read_bytes() + b"# r\xe9vis\xe9\n")  # cp1252 from a Windows editor: a traceback before
    bom.write_bytes(b"\xef\xbb\xbf" + bom.read_bytes())  # Notepad's UTF-8: refused as "start is '\ufeff0.0'" before
    with pytest.raises(InputError) as exc:
        prepare(cfg, tmp_path / "out")
    text = str(exc.value)
    n_latin = len(latin.read_bytes().splitlines())
    assert f"{latin} line {n_latin}: not UTF-8 text" in text and "save the file as UTF-8" in text
    assert str(bom) not in text
    for n, what in ((2, "empty or reversed"), (3, "expected a number"), (4, "outside its recording"),
                    (len(lines), "expected 0 or 1")):
        assert f"{txt} line {n}: " in text and what in text, (n, what, text)
    assert "sample_submission" not in text  # its <recording>#<k> ids are not compared with unsegmented rows
    assert not (tmp_path / "out" / "folds.csv").exists()


def test_an_empty_patient_cell_is_named_at_its_row_of_the_table_once(icbhi, tmp_path):
    """An empty group cell of a recording with 12 cycles was 12 problems naming its annotation
    file's lines, which hold no patient column, never train.csv's line (probe)."""
    cfg, _ = _config(tmp_path, ICBHI, icbhi, "icbhi")
    train = pd.read_csv(icbhi / "train.csv", dtype=str)
    train.loc[3, "patient"] = ""
    train.to_csv(icbhi / "train.csv", index=False)
    with pytest.raises(InputError) as exc:
        prepare(cfg, tmp_path / "out")
    assert [p for p in exc.value.problems if "group column" in p] == [
        f"{icbhi / 'train.csv'} line 5: empty group column 'patient'"], exc.value.problems


def test_repeated_and_overlapping_segments_are_warned_of_and_empty_classes_refused(icbhi, tmp_path):
    """A cycle listed twice and one overlapping another are kept with a warning naming their
    lines; touching cycles are not overlaps. In a CSV with a class column, an empty class cell of a
    training segment is refused with its line (it became a class 'nan')."""
    cfg, _ = _config(tmp_path, ICBHI, icbhi, "icbhi")
    txt = sorted((icbhi / "audio").glob("*.txt"))[0]
    lines = txt.read_text().splitlines()
    start, end = (float(v) for v in lines[0].split()[:2])
    txt.write_text("\n".join([*lines, lines[0], f"{start + 0.1:.3f}\t{end:.3f}\t0\t0"]) + "\n")
    warnings = " | ".join(prepare(cfg, tmp_path / "out")["warnings"])
    n = len(lines)
    assert f"1 segment(s) listed twice" in warnings and f"{txt} line {n + 1} repeats {txt} line 1" in warnings, warnings
    assert f"1 segment(s) overlapping" in warnings and f"{txt} line {n + 2} overlaps {txt} line 1" in warnings, warnings
    txt.write_text("\n".join(lines) + "\n")
    assert not prepare(cfg, tmp_path / "out2")["warnings"]  # the real cycles touch, never overlap
    rows = []  # the same cycles as one CSV with a class column
    for rec in pd.read_csv(icbhi / "train.csv").recording.tolist() + pd.read_csv(icbhi / "test.csv").recording.tolist():
        for line in (icbhi / "audio" / f"{rec}.txt").read_text().split("\n"):
            if line.strip():
                a, b, ex, _ = line.split()
                rows.append({"recording": rec, "start": a, "end": b, "cls": "exhale" if ex == "1" else "inhale"})
    table = pd.DataFrame(rows)
    table.loc[3, "cls"] = ""
    table.to_csv(icbhi / "segments.csv", index=False)
    csv_cfg = dict(ICBHI, segments={"format": "csv", "csv": "segments.csv", "id_column": "recording",
                                    "label_column": "cls"})
    cfg, _ = _config(tmp_path, csv_cfg, icbhi, "csv")
    with pytest.raises(InputError, match=rf"segments.csv line 5: empty 'cls'") as exc:
        prepare(cfg, tmp_path / "out3")
    assert len(exc.value.problems) == 1, exc.value.problems


def test_segment_config_typos_and_contradictions(tmp_path):
    for change, needle in (({"labls": ["a", "b"]}, "did you mean"),
                           ({"labels": ["a"]}, "two 0/1 label columns"),
                           ({"format": "json", "labels": [], "unit": "segment"}, "unit segment needs"),
                           ({"units": "frames"}, "needs a matrix section"),
                           ({"file": None}, "set 'file'")):
        cfg = json.loads(json.dumps(ICBHI))
        cfg["segments"].update(change)
        with pytest.raises(ConfigError, match=needle):
            _config(tmp_path, cfg, tmp_path, "bad")


def test_a_json_annotation_with_a_bom_or_other_bytes(tmp_path):
    from lib.data.segments import _json

    seg = {"key": "tokens", "start": "start", "end": "end", "labels": [], "label_column": None, "skip": None}
    path, problems = tmp_path / "a.json", []
    path.write_bytes(b"\xef\xbb\xbf" + b'{"tokens": [{"start": 0, "end": 5}]}')
    assert [(e["start"], e["end"]) for e in _json(path, seg, problems)] == [(0, 5)] and problems == []
    path.write_bytes(b'{"tokens": [\n{"start": 0, "end": 5, "note": "r\xe9vis\xe9"}]}')
    assert _json(path, seg, problems) == [] and problems == [f"{path} line 2: not UTF-8 text (byte 46: invalid "
                                                              "continuation byte); save the file as UTF-8"]


def test_a_json_token_without_its_label_key_is_unlabelled(tmp_path):
    """Test tokens of a JSON annotation usually lack the label key: every one was refused as
    "missing key(s) ['label']" (probe). Now they are unlabelled, as an empty label is; a missing
    start or end is still refused."""
    from lib.data.segments import _json

    seg = {"key": "tokens", "start": "start", "end": "end", "labels": ["wheeze"], "label_column": "label", "skip": None}
    path, problems = tmp_path / "t.json", []
    path.write_text(json.dumps({"tokens": [{"start": 0, "end": 5}, {"start": 5, "end": 9, "label": "E", "wheeze": 1},
                                           {"start": 9}]}))
    entries = _json(path, seg, problems)
    assert [(e["label"], e["flags"]) for e in entries] == [("", [None]), ("E", [True])]
    assert problems == [f"{path} item 2: missing key(s) ['end']; found ['start']"]


def test_matrix_errors_name_file_and_line(tmp_path):
    spec = {"n_bins": 3, "axes": "bins_frames", "format": None, "key": None, "header": False}
    ok = tmp_path / "ok.csv"
    ok.write_text("1,2,3,4\n5,6,7,8\n9,10,11,12\n")
    assert read_matrix(ok, spec).shape == (3, 4)
    assert read_matrix(ok, dict(spec, n_bins=4, axes="frames_bins")).shape == (4, 3)
    for text, needle in (("1,2,3\n4,5\n6,7,8\n", "line 2: 2 values"), ("1,2,3\n4,a,6\n7,8,9\n", "line 2 column 2"),
                         ("1,2,3\n4,nan,6\n7,8,9\n", "NaN or infinite value at line 2"),
                         ("1,2,3\n4,5,6\n", "2 bins where matrix.n_bins is 3")):
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(AudioError, match=needle):
            read_matrix(bad, spec)
    bad.write_bytes(b"1,2,3\n4,5,6\n7,8,\xe9\n")  # cp1252: the file and line, as for annotations
    with pytest.raises(AudioError, match=r"bad.csv line 3: not UTF-8 text"):
        read_matrix(bad, spec)
    bad.write_bytes(b"\xef\xbb\xbf1,2,3\n4,5,6\n7,8,9\n")  # a BOM
    assert read_matrix(bad, spec).shape == (3, 3)
    empty = tmp_path / "empty.npy"
    np.save(empty, np.zeros((3, 0)))
    with pytest.raises(AudioError, match="no frames"):
        read_matrix(empty, spec)
    wide = tmp_path / "wide.npy"
    np.save(wide, np.zeros((5, 3)))
    with pytest.raises(AudioError, match="set matrix.axes: frames_bins"):
        read_matrix(wide, spec)
    stft = tmp_path / "stft.npy"  # complex: refused, not cast to its real part (probe)
    np.save(stft, np.ones((3, 4), dtype=np.complex64))
    with pytest.raises(AudioError, match=r"stft.npy: complex values \(complex64\)"):
        read_matrix(stft, spec)
    nan = tmp_path / "nan.npy"  # a binary file has no lines
    np.save(nan, np.array([[1.0, 2, 3, 4], [5, np.nan, 7, 8], [9, 10, 11, 12]]))
    with pytest.raises(AudioError, match=r"nan.npy: NaN or infinite value at bin 1, frame 1$"):
        read_matrix(nan, spec)
    frames = pd.DataFrame(np.random.default_rng(0).random((5, 3)) + 1)  # 5 frames x 3 bins, as pandas writes it
    for kw, needle in (({"index": False}, r"line 1: 0, 1, ..., 2, a header row .*set matrix.header: true"),
                       ({"header": False}, r"column 1: 0, 1, ..., 4, an index column .*index=False"),
                       ({}, r"line 1 column 1: '' is not a number; a header row and an index column, as pandas' "
                            r"to_csv writes by default\? .*header=False, index=False")):  # to_csv(path) as it is
        frames.to_csv(bad, **kw)
        with pytest.raises(AudioError, match=needle):
            read_matrix(bad, dict(spec, axes="frames_bins"))
    frames.to_csv(bad, index=False)
    assert read_matrix(bad, dict(spec, axes="frames_bins", header=True)).shape == (3, 5)


def test_a_crop_never_leaves_its_segment():
    # three regions of one recording row, each filled with its own value; crops of 5 samples
    lengths = np.array([3, 8, 12])
    wave = torch.cat([torch.full((n,), float(k + 1)) for k, n in enumerate(lengths)])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    regs = np.array([[0, 0, 0.3], [0, 0.5, 1.3], [1, 0, 1.2]])
    grid = np.array([[0, 0, 0], [0, 0, 1], [1, 0, 2]], float)
    rng = np.random.default_rng(0)
    for pad in ("zero", "repeat", "reflect"):
        data = WaveData(wave, offsets, grid, {"sample_rate": 10, "clip_seconds": 0.5, "pad": pad}, 2, regs)
        for _ in range(20):
            items = data.sample_windows(np.array([0, 1]), rng)
            assert sorted(items[:, 0]) == [0, 1, 2]  # every segment of the recordings, once
            x = data.crops(items).numpy()
            for (region, _), row in zip(items, x):
                assert set(np.unique(row)) <= {0.0, float(region + 1)}, (pad, region, row)


def test_segments_vote_per_recording():
    comp = {"task": "multiclass", "audio": {"aggregate": "mean"}, "segments": {"unit": "recording", "aggregate": "vote"}}
    # recording 0: segments a (2 windows, class 0), b and c (class 1): vote 1/3 vs 2/3; recording 1: one segment
    probs = np.array([[0.9, 0.1], [0.7, 0.3], [0.4, 0.6], [0.2, 0.8], [0.6, 0.4]])
    owner, region = np.array([0, 0, 0, 0, 1]), np.array([0, 0, 1, 2, 3])
    out = aggregate_windows(probs, owner, region, 2, comp)
    assert np.allclose(out, [[1 / 3, 2 / 3], [1, 0]])
    assert np.allclose(aggregate_windows(probs, owner, region, 2, dict(comp, segments={})),
                       [[0.55, 0.45], [0.6, 0.4]])  # without segments: the mean over windows


def test_regions_of_a_split_table():
    t = pd.DataFrame({"id": ["a", "b"], "duration_s": [2.0, 3.0], "segments": ["0.1:0.5 1:1.5", "0:3"]})
    assert regions(t).tolist() == [[0, 0.1, 0.5], [0, 1, 1.5], [1, 0, 3]]
    assert regions(t.drop(columns="segments")).tolist() == [[0, 0, 2], [1, 0, 3]]


def test_every_stage_on_an_icbhi_style_folder(icbhi, tmp_path):
    _, cfg_path = _config(tmp_path, ICBHI, icbhi, "icbhi")
    out = tmp_path / "out"
    exp = tmp_path / "wave_small.yaml"
    exp.write_text(yaml.safe_dump({"base": str(ROOT / "configs/wave_cnn.yaml"), "name": "wave_small",
                                   "train": {"epochs": 2, "batch_size": 16}}))
    cached = tmp_path / "hgb.yaml"  # log-mel windows cut from each cycle, and a classical member
    cached.write_text(yaml.safe_dump({"base": str(ROOT / "configs/zoo/hgb.yaml"), "model": {"params": {"max_iter": 20}}}))
    log = stage("00_prepare.py", cfg_path, "--data-dir", icbhi, "--output-dir", out).stdout
    folds = pd.read_csv(out / "folds.csv")
    assert f"train: {len(folds)} segments in " in log and "recordings in" not in log  # unit: segment, inferred
    log = stage("01_features.py", exp, cached, "--output-dir", out).stdout
    assert f"train {len(folds)} segments in {len(folds)} regions" in log  # they said "recordings" (probe)
    for name in ("waveform", "log_mel64"):
        manifest = json.loads((out / "features" / name / "manifest.json").read_text())
        assert manifest["splits"]["train"]["regions"] == manifest["splits"]["train"]["windows"] == len(folds)
    log = stage("02_train.py", exp, cached, "--output-dir", out).stdout
    assert log.count(" per segment, ") == 2 and "per recording" not in log  # a row is a cycle here
    assert log.count(f"; {len(folds)} segments in ") == 2 and "recordings in" not in log
    for e in (exp, cached):
        assert " test segments (" in stage("03_infer.py", e, "--output-dir", out).stdout
    stage("04_ensemble.py", "wave_small", "hgb", "--output-dir", out)
    assert list(pd.read_csv(out / "oof" / "hgb.csv").id) == list(folds.id)
    oof = pd.read_csv(out / "oof" / "wave_small.csv")
    assert list(oof.id) == list(folds.id)  # one OOF row per cycle
    sub = pd.read_csv(out / "submission.csv")
    assert set(sub.id) == set(pd.read_csv(icbhi / "sample_submission.csv").id) and set(sub.label) <= {"inhale", "exhale"}
    scores = json.loads((out / "models" / "wave_small" / "scores.json").read_text())
    assert 0 <= scores["oof"]["icbhi_score"] <= 1
    # a cycle's annotation edited: the same rows and audio, other spans; the caches are built again (probe)
    first = sorted((icbhi / "audio").glob("*.txt"))[0]
    lines = first.read_text().splitlines()
    start, end, *rest = lines[0].split("\t")
    lines[0] = "\t".join([start, f"{(float(start) + float(end)) / 2:.3f}", *rest])
    first.write_text("\n".join(lines) + "\n")
    stage("00_prepare.py", cfg_path, "--data-dir", icbhi, "--output-dir", out)
    assert list(pd.read_csv(out / "folds.csv").id) == list(folds.id)  # the ids stay
    r = stage("02_train.py", cached, "--output-dir", out, check=False)  # 01 not run yet: refused, not trained on old spans
    assert r.returncode == 1 and "built for other rows or segments than folds.csv" in r.stderr, r.stderr
    log = stage("01_features.py", cached, "--output-dir", out).stdout
    assert "the train segments changed since the last build" in log, log
    regions_now = np.load(out / "features" / "log_mel64" / "train_regions.npy")
    assert regions_now.tolist() == regions(pd.read_csv(out / "folds.csv")).tolist()
    stage("02_train.py", cached, "--output-dir", out)


def test_every_stage_on_a_maic_style_folder(maic, tmp_path):
    _, cfg_path = _config(tmp_path, MAIC, maic, "maic")
    out = tmp_path / "out"
    exp = tmp_path / "tokens.yaml"
    exp.write_text(yaml.safe_dump({"base": str(ROOT / "configs/maic/tokens.yaml"), "name": "tokens",
                                   "model": {"name": "cnn", "params": {"channels": [16, 32]}},
                                   "augment": {"cutmix": {"p": 0.5}}, "tta": {"shifts": [0.0, 0.05]},
                                   "train": {"epochs": 2, "batch_size": 16}}))
    stage("00_prepare.py", cfg_path, "--data-dir", maic, "--output-dir", out)
    folds = pd.read_csv(out / "folds.csv")
    train = pd.read_csv(maic / "train.csv")
    assert len(folds) == len(train)  # a row per recording; its tokens are its segments
    n_tokens = sum(len([t for t in json.loads((maic / "tokens" / f"{i}.json").read_text())["tokens"] if not t.get("skip")])
                   for i in train.id)
    assert folds.segments.str.split().str.len().sum() == n_tokens
    stage("01_features.py", exp, "--output-dir", out)
    manifest = json.loads((out / "features" / "precomputed" / "manifest.json").read_text())
    assert manifest["kind"] == "frames" and manifest["spec_shape"] == [1, 128, 25]
    assert manifest["splits"]["train"]["regions"] == n_tokens
    stage("02_train.py", exp, "--output-dir", out)
    log = pd.read_csv(out / "models" / "tokens" / "fold0_log.csv")
    lr = yaml.safe_load((out / "models" / "tokens" / "config.yaml").read_text())["optimizer"]["params"]["lr"]
    # the schedule counts a step for every token's crop: the warm-up ends with epoch 1 (it ended in the first
    # epoch, and the cosine was spent by the second, when steps were counted per recording: probe)
    assert log.lr.iloc[0] == pytest.approx(lr, rel=0.05) and log.lr.iloc[-1] < 0.05 * lr, log
    stage("03_infer.py", exp, "--output-dir", out)
    stage("04_ensemble.py", "tokens", "--output-dir", out)
    oof = pd.read_csv(out / "oof" / "tokens.csv")
    assert list(oof.id) == list(folds.id)  # token predictions voted per recording
    assert np.allclose(oof[["p_E", "p_I"]].sum(axis=1), 1)
    votes = oof["p_E"] * folds.segments.str.split().str.len()
    assert np.allclose(votes, votes.round())  # each token votes for one class
    # the tokens' own OOF and test predictions, beside the recordings'; their votes are the recordings'
    tokens = pd.read_csv(out / "oof" / "tokens.segments.csv")
    assert len(tokens) == n_tokens and list(tokens.columns) == ["id", "segment", "start_s", "end_s", "fold", "target",
                                                               "p_E", "p_I"]
    assert (tokens.groupby("id").segment.agg(list) == tokens.groupby("id").size().map(lambda n: list(range(n)))).all()
    assert (tokens.fold.to_numpy() == folds.set_index("id").fold.loc[tokens.id].to_numpy()).all()
    share_e = (tokens.p_E > tokens.p_I).groupby(tokens.id, sort=False).mean()
    np.testing.assert_allclose(share_e.loc[oof.id].to_numpy(), oof.p_E.to_numpy(), atol=1e-6)
    bench = stage("bench/segments.py", "--output-dir", out, "tokens").stdout  # aggregations of that file
    vote = next(line for line in bench.splitlines() if line.startswith("| vote |")).split("|")[2]
    assert float(vote) == pytest.approx(json.loads((out / "models/tokens/scores.json").read_text())["oof"]["macro_f1"],
                                        abs=1e-4)  # the experiment's own aggregation, vote, reproduced
    test_tokens = pd.read_csv(out / "preds" / "tokens.segments.csv")
    test_table = pd.read_csv(out / "test.csv")
    assert len(test_tokens) == test_table.segments.str.split().str.len().sum() and (test_tokens.fold == -1).all()
    assert set(test_tokens.id) == set(test_table.id) and np.allclose(test_tokens[["p_E", "p_I"]].sum(axis=1), 1)
    sub = pd.read_csv(out / "submission.csv")
    assert list(sub.id) == list(pd.read_csv(maic / "sample_submission.csv").id)
    stage("05_bundle.py", "--output-dir", out, "--to", tmp_path / "bundle")  # a bundle reads the tables alone
    stage("predict_bundle.py", tmp_path / "bundle", "--data-dir", maic, "--work-dir", tmp_path / "work")
    assert pd.read_csv(tmp_path / "work" / "submission.csv").equals(sub)
    # the waveform path needs audio: refused in one line
    wave = tmp_path / "wave.yaml"
    wave.write_text(yaml.safe_dump({"base": str(ROOT / "configs/wave_cnn.yaml"), "name": "wave"}))
    r = stage("01_features.py", wave, "--output-dir", out, check=False)
    assert r.returncode == 1 and "ships matrices" in r.stderr and "Traceback" not in r.stderr
    r = stage("02_train.py", ROOT / "configs/zoo/hgb.yaml", "--output-dir", out, check=False)  # said: run 01
    assert r.returncode == 1 and "ships matrices" in r.stderr and "features: {name: precomputed}" in r.stderr


def test_a_submission_row_per_patient(tmp_path):
    """CirCor-style: several recordings per patient, the patient's label, one submission row per
    patient (``submission.unit: group``) from the mean of its recordings (generated audio)."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    root = tmp_path / "circor"
    (root / "audio").mkdir(parents=True)
    rows = []
    for p in range(18):
        label = "Present" if p % 2 else "Absent"
        for loc in ("AV", "MV"):
            t = np.arange(8000) / 4000
            y = 0.1 * rng.standard_normal(8000) + (0.5 * np.sin(2 * np.pi * 300 * t) if label == "Present" else 0)
            sf.write(root / "audio" / f"{p}_{loc}.wav", y.astype(np.float32), 4000)
            rows.append({"recording": f"{p}_{loc}", "patient": str(1000 + p), "murmur": label})
    table = pd.DataFrame(rows)
    table[table.patient.astype(int) < 1015].to_csv(root / "train.csv", index=False)
    table[table.patient.astype(int) >= 1015][["recording", "patient"]].to_csv(root / "test.csv", index=False)
    pd.DataFrame({"patient": ["1015", "1016", "1017"], "murmur": "Absent"}).to_csv(root / "sample.csv", index=False)
    cfg = {"task": "binary", "classes": ["Absent", "Present"], "metric": "accuracy",
           "train": {"csv": "train.csv", "id_column": "recording", "target_column": "murmur",
                     "audio": {"template": "audio/{id}.wav"}},
           "test": {"csv": "test.csv", "id_column": "recording", "audio": {"template": "audio/{id}.wav"}},
           "groups": {"column": "patient"}, "audio": {"clip_seconds": 1.0, "hop_seconds": 0.5},
           "folds": {"n_folds": 3}, "decision": {"group_aggregate": "mean", "threshold": 0.5},
           "submission": {"sample": "sample.csv", "id_column": "patient", "target_column": "murmur", "unit": "group"}}
    bad = json.loads(json.dumps(cfg))
    bad["decision"]["group_aggregate"] = None
    with pytest.raises(ConfigError, match="unit group"):
        _config(tmp_path, bad, root, "bad")
    _, path = _config(tmp_path, cfg, root, "circor")
    out = tmp_path / "out"
    stage("00_prepare.py", path, "--data-dir", root, "--output-dir", out)
    exp = ROOT / "configs/zoo/hgb.yaml"
    for script in ("01_features.py", "02_train.py", "03_infer.py"):
        stage(script, exp, "--output-dir", out)
    stage("04_ensemble.py", "hgb", "--output-dir", out)
    sub = pd.read_csv(out / "submission.csv", dtype=str)
    assert list(sub.patient) == ["1015", "1016", "1017"]
    assert list(sub.murmur) == ["Present", "Absent", "Present"]  # odd patients have the murmur


SLOW_MATRICES = """
import runpy, sys, time
sys.path.insert(0, sys.argv[1])
from lib.features import precomputed
read = precomputed.read_matrix

def slow_read(*args, **kwargs):
    time.sleep(0.2)
    return read(*args, **kwargs)

precomputed.read_matrix = slow_read   # the stage's own code, reading matrices slowly
sys.argv = sys.argv[2:]
runpy.run_path("01_features.py", run_name="__main__")
"""


def test_a_killed_matrix_cache_build_is_never_taken_for_finished(maic, tmp_path):
    from test_artifacts import _kill_when

    _, cfg_path = _config(tmp_path, MAIC, maic, "maic")
    out = tmp_path / "out"
    stage("00_prepare.py", cfg_path, "--data-dir", maic, "--output-dir", out)
    exp = ROOT / "configs/maic/tokens.yaml"
    script = tmp_path / "slow.py"
    script.write_text(SLOW_MATRICES)
    _kill_when([script, ROOT, "01_features.py", exp, "--output-dir", out, "--workers", "1"], "precomputed test:",
               stream="stderr")
    assert not (out / "features/precomputed/record.json").exists()
    r = stage("02_train.py", exp, "--output-dir", out, check=False)
    assert r.returncode == 1 and "01_features.py" in r.stderr
    log = stage("01_features.py", exp, "--output-dir", out).stdout
    assert "built in" in log and "128 bins at 62.5 frames/s" in log
    assert not [p for p in (out / "features/precomputed").iterdir() if p.name.startswith(".")]
    # another matrix section (the files' frame rate): the cache is built again, the train split too (it said
    # "up to date" before, and a new test set would have kept train frames cut at the old rate: review)
    _, cfg_path = _config(tmp_path, dict(MAIC, matrix=dict(MAIC["matrix"], frames_per_second=50.0)), maic, "maic50")
    stage("00_prepare.py", cfg_path, "--data-dir", maic, "--output-dir", out)
    log = stage("01_features.py", exp, "--output-dir", out).stdout
    assert "built in" in log and "kept" not in log and "128 bins at 50 frames/s" in log, log


def test_cycles_of_a_recording_never_split_by_a_row_scheme(icbhi, tmp_path):
    cfg = json.loads(json.dumps(ICBHI))
    cfg.pop("groups")
    cfg["folds"] = {"n_folds": 3, "scheme": "stratified"}  # splits rows: a recording's cycles would cross folds
    comp, _ = _config(tmp_path, cfg, icbhi, "rows")
    with pytest.raises(InputError, match="have rows in several folds.*stratified_group"):
        prepare(comp, tmp_path / "out")
