import re
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml
from conftest import make_toy_competition, stage

from lib.core.config import ROOT
from lib.components import load_competition
from lib.core.errors import ConfigError
from lib.core.paths import Outputs
from lib.data.prepare import InputError, group_of, id_to_file, prepare


def test_breathing_id_to_file_mapping():
    comp = load_competition(ROOT / "configs/data/breathing.yaml")
    assert id_to_file("steth_20180814_09_37_11_I_004", comp["train"]["audio"]) == "train/steth_20180814_09_37_11_004.wav"
    assert id_to_file("steth_20180814_09_37_11_E_010", comp["train"]["audio"]) == "train/steth_20180814_09_37_11_010.wav"
    assert id_to_file("steth_20190817_10_51_27_000.wav", comp["test"]["audio"]) == "test/steth_20190817_10_51_27_000.wav"
    assert group_of("steth_20180814_09_37_11_E_010", comp["groups"]["regex"]) == "steth_20180814_09_37_11"


def test_prepare_writes_folds_and_test(tmp_path):
    comp = make_toy_competition(tmp_path / "data")
    summary = prepare(comp, tmp_path / "out")
    folds = pd.read_csv(tmp_path / "out/folds.csv", dtype=str)
    assert list(folds.columns) == ["id", "path", "target", "group", "fold", "sample_rate", "duration_s", "channels"]
    assert len(folds) == 12 and summary["sample_rate"] == 16000
    assert folds.groupby("group").fold.nunique().max() == 1
    assert pd.read_csv(tmp_path / "out/test.csv").id.tolist() == ["t0", "t1"]
    assert (tmp_path / "out/competition.yaml").exists()
    from lib.core.paths import Outputs  # as the README's notebook section has it: an Outputs folder too

    prepare(comp, Outputs(str(tmp_path / "out2")))
    assert pd.read_csv(tmp_path / "out2/folds.csv", dtype=str).equals(folds)
    assert not any("folds differ" in w for w in prepare(comp, tmp_path / "out")["warnings"])  # the same folds: unsaid
    table = pd.read_csv(tmp_path / "data/train.csv")  # labels fixed: stratified folds drawn again, said (probe P)
    table.loc[[0, 2, 4], "label"] = "b"
    table.to_csv(tmp_path / "data/train.csv", index=False)
    said = [w for w in prepare(comp, tmp_path / "out")["warnings"] if "folds differ" in w]
    moved = int((pd.read_csv(tmp_path / "out/folds.csv", dtype=str).fold != folds.fold).sum())
    assert moved > 0 and said == [f"the folds differ from the earlier folds.csv's: {moved} of the 12 rows both hold are "
                                  f"in another fold now (stratified_group folds are drawn from the labels, groups and "
                                  f"rows, so one changed label can move many rows); 02 trains every model again, and "
                                  f"OOF scores before and after are on other folds. To keep folds fixed, copy "
                                  f"folds.csv's fold column into train.csv and set folds.column to it"], said


def test_every_problem_is_reported_and_nothing_written(tmp_path):
    comp = make_toy_competition(tmp_path / "data")
    root = tmp_path / "data"
    train = pd.read_csv(root / "train.csv")
    train.loc[3, "label"] = "c"                 # unknown label, line 5
    train.loc[4, "id"] = train.loc[5, "id"]     # duplicate id, line 7 (one file: counted once below)
    train.loc[6, "label"] = ""                  # empty cell, line 8
    train.to_csv(root / "train.csv", index=False)
    (root / "train" / "s4_8.wav").unlink()      # missing audio, line 10
    (root / "train" / "s4_9.wav").write_bytes(b"broken")  # unreadable, line 11
    sf.write(root / "test" / "t1.wav", np.zeros(4000, np.float32), 8000)  # another sample rate
    with pytest.raises(InputError) as err:
        prepare(comp, tmp_path / "out")
    text = str(err.value)
    for needle in ("line 5: unknown label 'c'", "line 7: duplicate id 's2_5'", "line 8: empty 'label'",
                   "line 10: ", "s4_8.wav: file not found", "line 11: ", "s4_9.wav: unreadable",
                   "different sample rates (16000 Hz: 10 files, 8000 Hz: 1 files)", "t1.wav (8000 Hz)"):
        assert needle in text, needle
    assert "unknown label ''" not in text  # the empty cell is said once
    assert not (tmp_path / "out").exists()


def test_lines_are_counted_as_an_editor_counts_them(tmp_path):
    """A quoted cell that spans lines and a blank line (which pandas skips) move the rows after
    them: the line named is the one an editor shows."""
    comp = make_toy_competition(tmp_path / "data")
    root = tmp_path / "data"
    train = pd.read_csv(root / "train.csv").assign(note="")
    train.loc[1, "note"] = "two\nlines"        # row 1 starts on line 3 and ends on line 4
    train.loc[6, "label"] = "c"                 # unknown label: line 8 + 1 (the cell) + 2 (the blank lines)
    lines = train.to_csv(index=False).splitlines()
    (root / "train.csv").write_text("\n".join(lines[:5] + ["", "   "] + lines[5:]) + "\n")  # blank lines after row 2
    with pytest.raises(InputError) as err:
        prepare(comp, tmp_path / "out")
    assert f"{root}/train.csv line 11: unknown label 'c'" in str(err.value), str(err.value)


def _competition(tmp_path, cfg: dict):
    import yaml

    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    return load_competition(tmp_path / "c.yaml", tmp_path / "data")


def _wav(path, sr=16000, seconds=0.5, channels=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros((int(sr * seconds), channels), np.float32) + 0.01, sr)


def test_labels_from_folders_and_ids_from_file_names(tmp_path):
    for label in ("cat", "dog"):
        for i in range(3):
            _wav(tmp_path / "data" / "train" / label / f"{label}{i}.flac")
    comp = _competition(tmp_path, {"task": "binary", "audio": {"clip_seconds": 0.5},
                                   "train": {"files": "train/*/*.flac", "target_from": "folder"},
                                   "folds": {"n_folds": 3}})
    s = prepare(comp, tmp_path / "out")
    folds = pd.read_csv(tmp_path / "out/folds.csv", dtype=str)
    assert s["classes"] == ["cat", "dog"] and comp["positive"] == "dog"  # classes found in the data
    assert folds.id.tolist() == [f"{c}{i}.flac" for c in ("cat", "dog") for i in range(3)]
    assert (folds.target == folds.id.str[:3]).all()
    _wav(tmp_path / "data" / "train" / "dog" / "dog9.FLAC")  # left out by the case-sensitive glob: said, not dropped
    with pytest.raises(InputError, match=r"1 file\(s\) match only when case is ignored, e.g. .*dog9.FLAC"):
        prepare(comp, tmp_path / "out2")
    comp["train"]["files"] = "train/*/*.[fF][lL][aA][cC]"
    prepare(comp, tmp_path / "out3")
    assert "dog9.FLAC" in pd.read_csv(tmp_path / "out3/folds.csv", dtype=str).id.tolist()


def test_a_hop_longer_than_the_window_is_said(tmp_path):
    make_toy_competition(tmp_path / "data")
    cfg = yaml.safe_load((tmp_path / "data/toy.yaml").read_text())
    cfg["audio"].update(clip_seconds=0.1, hop_seconds=0.25)  # 0.15 s of every 0.25 s never heard (probe)
    (tmp_path / "data/toy.yaml").write_text(yaml.safe_dump(cfg))
    log = stage("00_prepare.py", tmp_path / "data/toy.yaml", "--output-dir", tmp_path / "out").stdout
    assert "windows of 0.1 s every 0.25 s, aggregated by mean (WARNING: a hop longer than the window leaves 0.15 s " \
           "of every 0.25 s unheard)" in log, log
    cfg["audio"].update(hop_seconds=0.1)
    (tmp_path / "data/toy.yaml").write_text(yaml.safe_dump(cfg))
    assert "unheard" not in stage("00_prepare.py", tmp_path / "data/toy.yaml", "--output-dir", tmp_path / "out").stdout


def test_a_sample_submission_of_other_ids_says_which_side_lacks_which(tmp_path):
    comp = make_toy_competition(tmp_path / "data")
    pd.DataFrame({"id": ["t1", "t9", "t8"], "label": "a"}).to_csv(tmp_path / "data" / "sample.csv", index=False)
    with pytest.raises(InputError) as err:
        prepare(comp, tmp_path / "out")
    assert "1 test set ids not in the sample, e.g. ['t0']" in str(err.value)
    assert "2 sample ids not among the test set's ids (" in str(err.value)  # the test table named too
    comp["train"]["audio"]["template"] = "train/{ids}.wav"  # the columns a template can name: the CSV's (probe)
    with pytest.raises(InputError, match=r"names column 'ids', which the table lacks; it can name \['id', 'label'\]; "
                                         r"did you mean 'id'\?"):
        prepare(comp, tmp_path / "out")
    assert "test.csv), e.g. ['t8', 't9']" in str(err.value)


def test_a_sample_column_that_is_no_class_is_warned_about(tmp_path):
    """A probabilities sample with a column of a class training lacks: the submission kept the
    sample's placeholder there, unsaid (probe); listed in classes it is predicted near 0."""
    comp = make_toy_competition(tmp_path / "data")
    pd.DataFrame({"id": ["t1", "t0"], "a": 0.0, "b": 0.0, "c": 0.0}).to_csv(tmp_path / "data" / "sample.csv", index=False)
    comp["submission"].update(format="probabilities", target_column=None)
    warnings = prepare(comp, tmp_path / "out")["warnings"]
    assert any("sample.csv: column(s) ['c'] are no classes of the competition: the submission keeps the sample's "
               "values there; list them in `classes:`" in w for w in warnings), warnings
    comp["classes"] = ["a", "b", "c"]
    comp.update(task="multiclass", positive=None)
    assert not any("are no classes" in w for w in prepare(comp, tmp_path / "out2")["warnings"])


def test_a_sample_column_in_another_unicode_form_is_named_with_both_spellings(tmp_path):
    """A class 'régurgitation' written with a combining accent in the sample (NFD) and a
    precomposed one in train.csv (NFC) print alike: the error shows both escaped (probe)."""
    import unicodedata

    comp = make_toy_competition(tmp_path / "data")
    nfc, nfd = "r\u00e9g", unicodedata.normalize("NFD", "r\u00e9g")
    train = pd.read_csv(tmp_path / "data" / "train.csv").replace({"b": nfc})
    train.to_csv(tmp_path / "data" / "train.csv", index=False)
    pd.DataFrame({"id": ["t1", "t0"], "a": 0.0, nfd: 0.0}).to_csv(tmp_path / "data" / "sample.csv", index=False)
    comp["submission"].update(format="probabilities", target_column=None)
    comp.update(classes=["a", nfc], positive=nfc)
    with pytest.raises(InputError) as err:
        prepare(comp, tmp_path / "out")
    assert f"looks the same but is other text ({ascii(nfc)} wanted, {ascii(nfd)} found" in str(err.value), str(err.value)


def test_a_sample_whose_target_values_do_not_fit_the_format_is_warned_about(tmp_path):
    """format omitted (label) with a sample holding 0.5, or probability with a sample holding class
    names: the submission came out in the other form, unsaid (probe)."""
    comp = make_toy_competition(tmp_path / "data")
    pd.DataFrame({"id": ["t1", "t0"], "label": 0.5}).to_csv(tmp_path / "data" / "sample.csv", index=False)
    warnings = prepare(comp, tmp_path / "out")["warnings"]
    assert any("sample.csv: column 'label' holds numbers (e.g. 0.5) where submission.format label writes class names "
               "(a, b): if the competition wants p(positive) there, set format: probability" in w for w in warnings)
    pd.DataFrame({"id": ["t1", "t0"], "label": ["b", "a"]}).to_csv(tmp_path / "data" / "sample.csv", index=False)
    assert not any("holds" in w for w in prepare(comp, tmp_path / "out2")["warnings"])
    comp.update(classes=["1", "2"], positive="2")  # numbered classes: a 0 in the sample is a placeholder (review)
    pd.DataFrame({"id": ["t1", "t0"], "label": 0}).to_csv(tmp_path / "data" / "sample.csv", index=False)
    tr = pd.read_csv(tmp_path / "data" / "train.csv")
    tr.assign(label=tr["label"].map({"a": 1, "b": 2})).to_csv(tmp_path / "data" / "train.csv", index=False)
    assert not any("holds" in w or "otherwise" in w for w in prepare(comp, tmp_path / "out4")["warnings"])
    pd.DataFrame({"id": ["t1", "t0"], "label": ["2.0", "1"]}).to_csv(tmp_path / "data" / "sample.csv", index=False)
    assert any("column 'label' writes classes otherwise than train.csv (e.g. '2.0' for '2')" in w
               for w in prepare(comp, tmp_path / "out5")["warnings"])  # (a scorer comparing text: probe)
    comp = make_toy_competition(tmp_path / "data2")
    pd.DataFrame({"id": ["t1", "t0"], "label": ["b", "a"]}).to_csv(tmp_path / "data2" / "sample.csv", index=False)
    comp["submission"]["format"] = "probability"
    warnings = prepare(comp, tmp_path / "out3")["warnings"]
    assert any("column 'label' holds class names (e.g. b) where submission.format probability writes p(b)" in w
               for w in warnings), warnings


def test_a_multilabel_submission_joins_labels_as_the_training_csv_does(tmp_path):
    """``submission.label_separator`` defaulted to a space whatever ``train.label_separator`` was,
    so classes with spaces came out as ``Cat meow Dog bark``, which nothing can read back (probe)."""
    for i in range(4):
        _wav(tmp_path / "data" / f"r{i}.wav")
    pd.DataFrame({"id": [f"r{i}" for i in range(4)],
                  "labels": ["Dog bark", "Cat meow,Dog bark", "Cat meow", "Dog bark"]}).to_csv(
        tmp_path / "data" / "train.csv", index=False)
    pd.DataFrame({"id": ["r0"], "labels": ["Dog bark"]}).to_csv(tmp_path / "data" / "test.csv", index=False)
    pd.DataFrame({"id": ["r0"], "labels": ["Cat meow,Dog bark"]}).to_csv(tmp_path / "data" / "sample.csv", index=False)
    cfg = {"task": "multilabel", "audio": {"clip_seconds": 0.5}, "folds": {"n_folds": 2},
           "train": {"csv": "train.csv", "id_column": "id", "target_column": "labels", "label_separator": ",",
                     "audio": {"template": "{id}.wav"}},
           "test": {"csv": "test.csv", "id_column": "id", "audio": {"template": "{id}.wav"}},
           "submission": {"sample": "sample.csv", "id_column": "id", "target_column": "labels"}}
    assert _competition(tmp_path, cfg)["submission"]["label_separator"] == ","
    cfg["submission"]["label_separator"] = " "
    with pytest.raises(InputError, match=r"submission.label_separator ' ' joins a row's labels, but the classes "
                                         r"\['Cat meow', 'Dog bark'\] hold it"):
        prepare(_competition(tmp_path, cfg), tmp_path / "out")


def test_a_sample_joining_labels_by_a_space_is_warned_about_when_the_separator_is_another():
    """submission.label_separator now follows train.label_separator (','): a competition whose
    sample joins labels by a space got commas, unsaid (review)."""
    from lib.data.prepare import _check_sample_values

    cfg = {"task": "multilabel", "classes": ["bark", "meow", "purr"],
           "submission": {"format": "label", "label_separator": ",", "target_column": "labels"}}
    warnings = []
    _check_sample_values(pd.Series(["bark meow", "purr"]), cfg, "s.csv", [], warnings)
    assert warnings == ["s.csv: column 'labels' joins labels with a space (e.g. 'bark meow') where "
                        "submission.label_separator is ',' (by default train.label_separator): set "
                        "submission.label_separator: ' ' if the competition wants spaces"]
    warnings = []
    _check_sample_values(pd.Series(["bark,meow", "purr"]), cfg, "s.csv", [], warnings)
    assert warnings == []


def test_files_at_other_rates_are_counted_once_however_many_segments_they_have(tmp_path):
    """The mixed-rate refusal counted segment rows as files and repeated one file in its examples
    (probe)."""
    from lib.data.prepare import _check_rates

    rows = pd.DataFrame({"path": ["a.ogg"] * 6 + ["b.ogg"] * 9 + ["c.ogg"] * 12,
                         "sample_rate": [44100] * 6 + [32000] * 21})
    problems = []
    _check_rates([rows], None, problems)
    assert "(32000 Hz: 2 files, 44100 Hz: 1 files)" in problems[0] and problems[0].count("a.ogg") == 1, problems


def test_files_read_resampled_are_counted_by_their_native_rate(tmp_path):
    make_toy_competition(tmp_path / "data")
    sf.write(tmp_path / "data" / "test" / "t1.wav", np.zeros(4000, np.float32), 8000)
    cfg = yaml.safe_load((tmp_path / "data" / "toy.yaml").read_text())
    cfg["audio"]["sample_rate"] = 16000  # asked for: allowed, and said
    (tmp_path / "rs.yaml").write_text(yaml.safe_dump(cfg))
    log = stage("00_prepare.py", tmp_path / "rs.yaml", "--data-dir", tmp_path / "data", "--output-dir",
                tmp_path / "out").stdout
    assert "audio: 1 files are read resampled to 16000 Hz (soxr_hq), from 8000 Hz (1)" in log, log


def test_multilabel_columns_metadata_groups_and_predefined_folds(tmp_path):
    rows = []
    for i in range(8):
        _wav(tmp_path / "data" / "audio" / f"r{i}.wav", sr=[16000, 22050][i % 2], channels=2)
        rows.append({"file": f"r{i}.wav", "a": i % 2, "b": int(i % 3 == 0), "patient": f"p{i // 2}",
                     "fold": i // 4 + 1, "age": "" if i == 5 else 30 + i, "sex": "FM"[i % 2]})
    pd.DataFrame(rows).to_csv(tmp_path / "data" / "train.csv", index=False)
    cfg = {"task": "multilabel", "audio": {"clip_seconds": 0.5, "sample_rate": 16000, "channel": 1},
           "train": {"csv": "train.csv", "id_column": "file", "target_columns": ["a", "b"],
                     "audio": {"template": "audio/{id}"}},
           "groups": {"column": "patient"}, "folds": {"column": "fold"},
           "metadata": {"numeric": ["age"], "categorical": ["sex"]}}
    comp = _competition(tmp_path, cfg)
    assert comp["classes"] == ["a", "b"] and comp["folds"]["scheme"] == "predefined"
    summary = prepare(comp, tmp_path / "out")
    assert not summary["warnings"] and summary["metadata"] == {"meta_age": {"train": 1}, "meta_sex": {"train": 0}}
    assert summary["without_labels"] == 2
    folds = pd.read_csv(tmp_path / "out/folds.csv", dtype={"target": str}, keep_default_na=False)
    assert folds.target.tolist() == ["b", "a", "", "a;b", "", "a", "b", "a"]
    assert folds.fold.tolist() == [0] * 4 + [1] * 4 and folds.meta_sex.tolist() == list("FM" * 4)
    assert summary["fold_values"] == {0: "1", 1: "2"}  # the shipped values 1, 2 are folds 0, 1 (00 says it)
    assert folds.meta_age.tolist()[4:6] == ["34.0", ""]
    one_fold = pd.DataFrame(rows).assign(b=[1, 0, 0, 1, 0, 0, 0, 0])  # b in fold 0 only: a warning, not silence
    one_fold.to_csv(tmp_path / "data" / "train.csv", index=False)
    warnings = prepare(comp, tmp_path / "out_b")["warnings"]
    assert len(warnings) == 1 and "no positive row in the validation rows of some folds" in warnings[0]
    assert "1 of them in one fold or none, whose model(s) train without them: b (2 rows, in 1 of 2 folds)" in warnings[0]
    pd.DataFrame(rows).to_csv(tmp_path / "data" / "train.csv", index=False)
    # a patient split across the shipped folds, a bad age, a missing channel: all reported
    df = pd.read_csv(tmp_path / "data" / "train.csv", dtype=str, keep_default_na=False)
    df.loc[3, "fold"], df.loc[6, "age"] = "2", "old"
    df.to_csv(tmp_path / "data" / "train.csv", index=False)
    comp = _competition(tmp_path, dict(cfg, audio={"clip_seconds": 0.5, "sample_rate": 16000, "channel": 2}))
    with pytest.raises(InputError) as err:
        prepare(comp, tmp_path / "out")
    text = str(err.value)
    assert "train.csv line 8: metadata 'age' is 'old'; expected a number" in text
    assert "r0.wav has 2 channel(s); audio.channel 2 does not exist" in text
    comp["audio"]["channel"] = 0
    with pytest.raises(InputError, match="group 'p1' has rows in several of the predefined folds: column 'fold' "
                                         "holds '1' \\(1\\), '2' \\(1\\)"):  # the values named (probe)
        prepare(dict(comp, metadata={"numeric": [], "categorical": []}), tmp_path / "out")
    # one fold spelt two ways ('2' and '2.0', or ' 2') made a fold of its own, unsaid (probe)
    for other in ("2.0", " 2"):
        df = pd.DataFrame(rows).astype({"fold": str})
        df.loc[[6, 7], "fold"] = other
        df.to_csv(tmp_path / "data" / "train.csv", index=False)
        with pytest.raises(ConfigError, match=f"fold values '2' \\(2 rows\\), '{other}' \\(2 rows\\) are one "
                                              "fold spelt in several ways"):
            prepare(dict(comp, metadata={"numeric": [], "categorical": []}), tmp_path / "out")
    # an n_folds that the fold column contradicts was dropped unsaid (probe)
    pd.DataFrame(rows).to_csv(tmp_path / "data" / "train.csv", index=False)
    comp = _competition(tmp_path, dict(cfg, folds={"column": "fold", "n_folds": 3}))
    with pytest.raises(ConfigError, match=r"folds: n_folds is 3, but column 'fold' holds 2 fold values: remove n_folds"):
        prepare(comp, tmp_path / "out_n")
    comp = _competition(tmp_path, dict(cfg, folds={"scheme": "leave_one_group_out", "n_folds": 3}))
    with pytest.raises(ConfigError, match="n_folds is 3, but scheme leave_one_group_out makes one fold per group, 4 here"):
        prepare(comp, tmp_path / "out_n")
    assert prepare(_competition(tmp_path, dict(cfg, folds={"column": "fold", "n_folds": 2})), tmp_path / "out_n")


def test_multilabel_long_form_rows_list_cells_and_path_groups(tmp_path):
    for i in range(6):
        _wav(tmp_path / "data" / "wav" / f"site{i % 3}" / f"r{i}.wav")
    pd.DataFrame({"id": ["r0", "r0", "r1", "r2", "r3", "r4", "r5"],
                  "label": ["dog", "bird", "['cat', 'dog']", "cat", "bird", "dog", "[]"],
                  "site": [f"site{i % 3}" for i in (0, 0, 1, 2, 3, 4, 5)]}).to_csv(tmp_path / "data/train.csv", index=False)
    comp = _competition(tmp_path, {
        "task": "multilabel", "audio": {"clip_seconds": 0.5},
        "train": {"csv": "train.csv", "id_column": "id", "target_column": "label",
                  "audio": {"template": "wav/{site}/{id}.wav"}},  # other columns of the row may be used
        "groups": {"regex": "wav/(site\\d)/", "on": "path"}, "folds": {"n_folds": 3, "scheme": "group"}})
    prepare(comp, tmp_path / "out")
    folds = pd.read_csv(tmp_path / "out/folds.csv", dtype=str, keep_default_na=False)
    assert comp["classes"] == ["bird", "cat", "dog"]
    assert folds.id.tolist() == ["r0", "r1", "r2", "r3", "r4", "r5"]  # the two r0 rows merged
    assert folds.target.tolist() == ["dog;bird", "cat;dog", "cat", "bird", "dog", ""]
    assert folds.group.tolist() == ["site0", "site1", "site2"] * 2
    assert folds.groupby("group").fold.nunique().max() == 1
    # a regex that misses some rows is said; one that misses every row (a typo) is refused
    summary = prepare(dict(comp, groups={"regex": "wav/(site[01])/", "on": "path"}), tmp_path / "out")
    assert any("groups.regex 'wav/(site[01])/' matches no path of 2 of 6 rows (e.g. 'wav/site2/r2.wav'" in w
               for w in summary["warnings"]), summary["warnings"]
    with pytest.raises(InputError, match=r"groups.regex '\(site\)' matches no id of the 6 rows of .*train.csv "
                                         r"\(e.g. 'r0', 'r1', 'r2'\): every row would be its own group"):
        prepare(dict(comp, groups={"regex": "(site)", "on": "id"}), tmp_path / "out")
    # a list printed without commas (numpy's way) was read as one label 'catdog' (probe)
    train = pd.read_csv(tmp_path / "data/train.csv", dtype=str, keep_default_na=False)
    train.loc[2, "label"] = "['cat' 'dog']"
    train.to_csv(tmp_path / "data/train.csv", index=False)
    with pytest.raises(InputError, match=r"train.csv line 4: 'label' is \"\['cat' 'dog'\]\", a list without commas"):
        prepare(comp, tmp_path / "out")


def test_multilabel_labels_joined_by_semicolons_need_their_separator(tmp_path):
    for i in range(6):
        _wav(tmp_path / "data" / "wav" / f"r{i}.wav")
    pd.DataFrame({"id": [f"r{i}" for i in range(6)],
                  "label": ["owl;robin", "owl", "robin", "robin;owl", "wren", "owl;wren"]}
                 ).to_csv(tmp_path / "data/train.csv", index=False)
    cfg = {"task": "multilabel", "audio": {"clip_seconds": 0.5}, "folds": {"n_folds": 2, "scheme": "multilabel_stratified"},
           "train": {"csv": "train.csv", "id_column": "id", "target_column": "label",
                     "audio": {"template": "wav/{id}.wav"}}}
    # the default separator (a space) read 'owl;robin' as one class, which folds.csv's ';' split again
    with pytest.raises(ConfigError, match=r"train.csv: label\(s\) \['owl;robin', 'owl;wren', 'robin;owl'\] "
                                          r"contain ';'.*set train.label_separator: ';' \(it is ' '\)"):
        prepare(_competition(tmp_path, cfg), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match=r"classes: label\(s\) \['owl;robin'\] contain ';'.*; rename them"):
        prepare(_competition(tmp_path, dict(cfg, classes=["owl;robin", "owl", "robin", "wren"])), tmp_path / "out")
    comp = _competition(tmp_path, dict(cfg, train=dict(cfg["train"], label_separator=";")))
    prepare(comp, tmp_path / "out")
    assert comp["classes"] == ["owl", "robin", "wren"]
    folds = pd.read_csv(tmp_path / "out/folds.csv", dtype=str)
    assert folds.target.tolist() == ["owl;robin", "owl", "robin", "robin;owl", "wren", "owl;wren"]
    # commas: no row with two labels, classes joined by ',' -> the separator named, with or without classes (probe)
    labels = ["owl,robin", "owl", "robin", "robin,owl", "wren", "owl owl"]
    pd.DataFrame({"id": [f"r{i}" for i in range(6)], "label": labels}).to_csv(tmp_path / "data/train.csv", index=False)
    for extra in ({}, {"classes": ["owl", "robin", "wren"]}):
        with pytest.raises(ConfigError, match=r"train.csv: no row has two labels, but 2 label\(s\) join classes with "
                                              r"',' \(e.g. 'owl,robin'\): set train.label_separator: ','"):
            prepare(_competition(tmp_path, dict(cfg, **extra)), tmp_path / "out2")
    comp = _competition(tmp_path, dict(cfg, train=dict(cfg["train"], label_separator=",")))
    pd.DataFrame({"id": [f"r{i}" for i in range(6)], "label": [*labels[:5], "owl,owl"]}).to_csv(
        tmp_path / "data/train.csv", index=False)
    with pytest.raises(ConfigError, match=r"classes lists \['owl'\] more than once"):  # (it said "2 distinct")
        _competition(tmp_path, dict(cfg, classes=["owl", "robin", "wren", "owl"]))
    report = prepare(comp, tmp_path / "out3")
    assert comp["classes"] == ["owl", "robin", "wren"]
    assert any("1 row(s) name a label twice, e.g. " in w and "line 7" in w for w in report["warnings"]), report
    declared = _competition(tmp_path, dict(cfg, classes=["owl", "robin", "wren", "owl,robin"]))  # a name with a comma
    pd.DataFrame({"id": [f"r{i}" for i in range(6)], "label": ["owl,robin", "owl", "robin", "wren", "owl", "robin"]}
                 ).to_csv(tmp_path / "data/train.csv", index=False)
    prepare(declared, tmp_path / "out4")  # taken as named, not told to split it


def _patients(tmp_path, n_patients=40, seed=0):
    """A multi-label competition: 2-3 recordings of 0.2 s per patient, labels per patient."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        labels = (rng.random(3) < [0.5, 0.3, 0.2]).astype(int)
        for r in range(2 + p % 2):
            _wav(tmp_path / "data" / "audio" / f"p{p}_{r}.wav", seconds=0.2)
            rows.append({"file": f"p{p}_{r}.wav", "patient": f"p{p}", "a": labels[0], "b": labels[1], "c": labels[2]})
    pd.DataFrame(rows).to_csv(tmp_path / "data" / "train.csv", index=False)
    return {"task": "multilabel", "audio": {"clip_seconds": 0.2},
            "train": {"csv": "train.csv", "id_column": "file", "target_columns": ["a", "b", "c"],
                      "audio": {"template": "audio/{id}"}},
            "groups": {"column": "patient"}}


def test_multilabel_with_groups_keeps_patients_together_by_default(tmp_path):
    cfg = _patients(tmp_path)
    comp = _competition(tmp_path, cfg)
    assert comp["folds"]["scheme"] == "multilabel_stratified_group"
    s = prepare(comp, tmp_path / "out")
    folds = pd.read_csv(tmp_path / "out/folds.csv", dtype={"target": str}, keep_default_na=False)
    assert folds.groupby("group").fold.nunique().max() == 1 and folds.fold.nunique() == 5
    patients = folds.drop_duplicates("group")  # each label's patients spread evenly over the folds
    for label in "abc":
        per_fold = patients.target.str.contains(label).groupby(patients.fold).sum()
        assert (per_fold - per_fold.sum() / 5).abs().max() <= 1.5, (label, per_fold.tolist())
    assert s["warnings"] == []
    # the row-level scheme, chosen explicitly, splits patients: the message names the cause and the fix
    comp = _competition(tmp_path, dict(cfg, folds={"scheme": "multilabel_stratified"}))
    with pytest.raises(InputError, match="folds.scheme 'multilabel_stratified' ignores groups; "
                                         "use 'multilabel_stratified_group'"):
        prepare(comp, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


def test_class_without_training_rows_is_a_warning(tmp_path):
    for label in ("cat", "dog"):
        for i in range(3):
            _wav(tmp_path / "data" / "train" / label / f"{label}{i}.wav", seconds=0.2)
    comp = _competition(tmp_path, {"task": "multiclass", "classes": ["cat", "dog", "owl"], "audio": {"clip_seconds": 0.2},
                                   "train": {"files": "train/*/*.wav", "target_from": "folder"}, "folds": {"n_folds": 3}})
    s = prepare(comp, tmp_path / "out")
    assert len(s["warnings"]) == 1 and "['owl']" in s["warnings"][0] and "no training rows" in s["warnings"][0]
    assert (tmp_path / "out/folds.csv").exists()


def test_a_kind_of_problem_is_not_hidden_behind_fifty_of_another(tmp_path):
    """00 lists 50 problems: the first of every kind among them, then the rest counted by kind, so
    that one truncated file after 60 missing ones is still named (a probe: only the first 50
    were listed)."""
    comp = make_toy_competition(tmp_path / "data", n=64)
    root = tmp_path / "data"
    for i in range(60):
        (root / "train" / f"s{i // 2}_{i}.wav").unlink()
    wav = (root / "train" / "s31_63.wav").read_bytes()
    (root / "train" / "s31_63.wav").write_bytes(wav[:-2000])  # line 65, after the 60 missing files
    with pytest.raises(InputError) as err:
        prepare(comp, tmp_path / "out")
    lines = str(err.value).splitlines()
    assert lines[0] == "61 problem(s) in the input:"
    assert f"  {root}/train.csv line 65: {root}/train/s31_63.wav: truncated: 2000 bytes of audio data the header declares are missing" in lines
    assert sum("file not found" in line for line in lines[1:-1]) == 49 and len(lines) == 52
    assert lines[-1] == "  ... and 11 more: 11 x file not found"


def test_silent_wrong_inputs_are_errors(tmp_path):
    comp = make_toy_competition(tmp_path / "data")
    root = tmp_path / "data"
    train = pd.read_csv(root / "train.csv")
    train.loc[4, "id"] = "x/../s1_3"           # line 6: the file of line 5 (s1_3) through another id
    train.loc[6, "id"] = "../../outside"        # line 8: leaves the data folder
    train.to_csv(root / "train.csv", index=False)
    wav = (root / "train" / "s4_9.wav").read_bytes()
    (root / "train" / "s4_9.wav").write_bytes(wav[:-2000])  # line 11: truncated
    y = np.full(8000, 0.1, np.float32)
    y[100] = np.nan
    sf.write(root / "train" / "s5_10.wav", y, 16000, subtype="FLOAT")  # line 12: a NaN sample
    with pytest.raises(InputError) as err:
        prepare(comp, tmp_path / "out")
    text = str(err.value)
    for needle in (f"train.csv line 5 (id 's1_3') and {root}/train.csv line 6 (id 'x/../s1_3'): different ids "
                   f"resolve to the same file {root}/train/s1_3.wav",
                   f"train.csv line 8: id '../../outside' maps to {root}/train/../../outside.wav, outside the data folder",
                   f"train.csv line 11: {root}/train/s4_9.wav: truncated: 2000 bytes",
                   f"train.csv line 12: {root}/train/s5_10.wav: 1 NaN or infinite sample(s)"):
        assert needle in text, needle
    assert not (tmp_path / "out").exists()


def test_00_says_how_recordings_with_several_channels_become_mono(tmp_path):
    """A stereo file among mono ones is averaged to mono (the default) or gives the channel that
    audio.channel names, and 00 says which, with the count, instead of mixing it down unsaid."""
    import yaml
    from conftest import stage

    make_toy_competition(tmp_path / "data")
    sf.write(tmp_path / "data/train/s0_0.wav", np.zeros((8000, 2), np.float32), 16000)
    r = stage("00_prepare.py", tmp_path / "data/toy.yaml", "--output-dir", tmp_path / "out")
    assert "audio: 1 recordings have several channels: averaged to mono" in r.stdout
    cfg = yaml.safe_load((tmp_path / "data/toy.yaml").read_text())
    cfg["audio"]["channel"] = 0  # the mono files have channel 0 only
    (tmp_path / "data/toy.yaml").write_text(yaml.safe_dump(cfg))
    r = stage("00_prepare.py", tmp_path / "data/toy.yaml", "--output-dir", tmp_path / "out")
    assert "audio: 1 recordings have several channels: channel 0 taken" in r.stdout


def test_tables_and_fold_settings_that_went_wrong_unsaid_are_errors(tmp_path):
    """Each of these passed 00 (or crashed it with a traceback): an empty shipped-fold cell (an
    extra fold), a repeated id in the sample submission (04 failed later, blaming the ids), a
    CSV that is not UTF-8 or has a ragged row, folds.column beside another scheme, slices or
    stratify_by without a CSV, and ``on:`` written as the docs show (YAML 1.1 read it as true)."""
    import yaml

    comp = make_toy_competition(tmp_path / "data")
    root = tmp_path / "data"
    train = pd.read_csv(root / "train.csv").assign(fold=[1, 2] * 6)
    train.loc[2, "fold"] = None  # line 4
    train.to_csv(root / "train.csv", index=False)
    pd.DataFrame({"id": ["t1", "t0", "t0"], "label": "a"}).to_csv(root / "sample.csv", index=False)
    with pytest.raises(InputError) as err:
        prepare(dict(comp, folds={**comp["folds"], "scheme": "predefined", "column": "fold"}), tmp_path / "out")
    text = str(err.value)
    assert "train.csv line 4: empty fold column 'fold'" in text, text
    assert "sample.csv: 1 repeated id(s) in 'id', e.g. ['t0'] (line 4)" in text and "ids differ" not in text, text
    train.loc[2, "fold"] = 1
    (root / "train.csv").write_bytes(train.to_csv(index=False).replace("s0_0", "s0_\xe9").encode("cp1252"))
    with pytest.raises(InputError, match=r"train.csv line 2: not UTF-8 text \(byte 17: .*save the file as UTF-8"):
        prepare(comp, tmp_path / "out")
    (root / "train.csv").write_text(train.to_csv(index=False) + "s9_99,a,1,extra\n")
    with pytest.raises(InputError, match=r"train.csv: not a well-formed CSV table .*line 14"):
        prepare(comp, tmp_path / "out")
    (root / "train.csv").write_text(train.to_csv(index=False, sep=";"))  # (a did-you-mean of the whole header: probe)
    with pytest.raises(InputError, match=r"train.csv: the header 'id;label;fold' is separated by ';', not by "
                                         r"commas: save the file as comma-separated values"):
        prepare(comp, tmp_path / "out")
    (root / "train.csv").write_text("id;label;fold\ns0_0;a;1,5\ns0_1;b;2,5,1\n")  # decimal commas: ragged (review)
    with pytest.raises(InputError, match=r"train.csv: the header 'id;label;fold' is separated by ';'"):
        prepare(comp, tmp_path / "out")
    raw = yaml.safe_load((root / "toy.yaml").read_text())
    files = {"files": "train/*.wav", "target_from": "folder"}
    cases = [({"folds": {"column": "fold", "scheme": "stratified"}}, "column 'fold' gives the shipped folds"),
             ({"train": files, "slices": ["db"]}, "slices read(s) CSV columns, but [train] has no 'csv'"),
             ({"train": files, "folds": {"stratify_by": ["db"]}}, "folds.stratify_by read(s) CSV")]
    for change, needle in cases:
        (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**raw, **change}))
        with pytest.raises(ConfigError, match=re.escape(needle)):
            load_competition(tmp_path / "bad.yaml")
    text = (root / "toy.yaml").read_text().replace("groups:\n  regex: ^(s\\d+)_", "groups:\n  regex: ^(s\\d+)_\n  on: path")
    (tmp_path / "on.yaml").write_text(text)
    assert load_competition(tmp_path / "on.yaml")["groups"]["on"] == "path"


def test_labels_and_ids_spelt_like_missing_values_survive_every_stage(tmp_path):
    """A class "None" (no adventitious sound) and ids "NA" / "null": pandas reads these words as
    missing by default, so folds.csv gave them back as NaN (a traceback in 00 after its record
    and in 02) and test ids became empty in the prediction files (04 refused; probe)."""
    make_toy_competition(tmp_path / "toy")
    root, out = tmp_path / "toy", tmp_path / "out"
    train = pd.read_csv(root / "train.csv")
    train["label"] = train["label"].map({"a": "None", "b": "Wheeze"})
    train.to_csv(root / "train.csv", index=False)
    for old, new in (("t0", "NA"), ("t1", "null")):
        (root / "test" / f"{old}.wav").rename(root / "test" / f"{new}.wav")
    pd.DataFrame({"id": ["NA", "null"]}).to_csv(root / "test.csv", index=False)
    pd.DataFrame({"id": ["null", "NA"], "label": "None"}).to_csv(root / "sample.csv", index=False)
    cfg = yaml.safe_load((root / "toy.yaml").read_text())
    cfg.update(classes=["None", "Wheeze"], positive="Wheeze")
    (root / "toy.yaml").write_text(yaml.safe_dump(cfg))
    stage("00_prepare.py", root / "toy.yaml", "--output-dir", out)
    folds = Outputs(out).load_split("train")
    assert sorted(folds["target"].unique()) == ["None", "Wheeze"] and list(Outputs(out).load_split("test")["id"]) == ["NA", "null"]
    hgb = ROOT / "configs/zoo/hgb.yaml"
    for script in ("01_features.py", "02_train.py", "03_infer.py"):
        stage(script, hgb, "--output-dir", out)
    stage("04_ensemble.py", "--output-dir", out)
    sub = pd.read_csv(out / "submission.csv", dtype=str, keep_default_na=False)
    assert list(sub["id"]) == ["null", "NA"] and set(sub["label"]) <= {"None", "Wheeze"}


def test_a_bad_label_column_with_class_columns_in_the_submission_is_reported(tmp_path):
    """Format probabilities, no classes: list (found in the data), a misspelt target column: a
    TypeError traceback hid the one-line error (probe)."""
    make_toy_competition(tmp_path / "toy")
    cfg = yaml.safe_load((tmp_path / "toy/toy.yaml").read_text())
    cfg.pop("classes"), cfg.pop("positive")
    cfg["train"]["target_column"] = "labl"
    cfg["submission"].update(format="probabilities", target_column=None)
    (tmp_path / "toy/toy.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(InputError, match=r"train.csv: missing column\(s\) 'labl' \(train.target_column; did you mean "
                                         r"'label'\?\); found \['id', 'label'\]"):
        prepare(load_competition(tmp_path / "toy/toy.yaml"), tmp_path / "out")
    cfg["train"]["target_column"] = "label"
    cfg["slices"] = ["stie"]  # a slice column misspelt is named as the slices' (probe)
    (tmp_path / "toy/toy.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(InputError, match=r"train.csv: missing column\(s\) 'stie' \(slices\); found"):
        prepare(load_competition(tmp_path / "toy/toy.yaml"), tmp_path / "out")


def test_recordings_longer_than_the_clip_are_noted_for_the_test_split_too(tmp_path):
    """A 120-s test file with no hop was predicted from its first second, and only the training
    recordings got the note (probe)."""
    make_toy_competition(tmp_path / "data")  # 0.5-s recordings
    cfg = yaml.safe_load((tmp_path / "data/toy.yaml").read_text())
    sf.write(tmp_path / "data/test/t0.wav", np.zeros(16000 * 3, np.float32), 16000)  # one long test file
    for clip, said in ((0.5, "note: 1 test recording is longer than 0.5 s: a cached feature set keeps only the start"),
                       (0.25, "note: 12 training recordings and 2 test recordings are longer than 0.25 s")):
        (tmp_path / "data/toy.yaml").write_text(yaml.safe_dump({**cfg, "audio": {**cfg["audio"], "clip_seconds": clip}}))
        log = stage("00_prepare.py", tmp_path / "data/toy.yaml", "--output-dir", tmp_path / f"out{clip}").stdout
        assert said in log
    cfg["audio"]["hop_seconds"] = 0.25
    (tmp_path / "data/toy.yaml").write_text(yaml.safe_dump(cfg))
    assert "note:" not in stage("00_prepare.py", tmp_path / "data/toy.yaml", "--output-dir", tmp_path / "out").stdout


def test_a_bundles_test_set_says_the_files_resampled_and_mixed(tmp_path):
    """predict_bundle.py said only how many test recordings it read; stage 00 says which files
    are read resampled or mixed to mono (probe): prepare_test returns the same notes."""
    from lib.data.prepare import prepare_test

    comp = make_toy_competition(tmp_path / "data")
    sf.write(tmp_path / "data" / "test" / "t1.wav", np.zeros((4000, 2), np.float32), 8000)  # stereo, 8 kHz
    comp["audio"]["sample_rate"] = 16000
    prepare(comp, tmp_path / "out")
    resolved = yaml.safe_load((tmp_path / "out" / "competition.yaml").read_text())
    prep = prepare_test(resolved, tmp_path / "work")
    assert prep["notes"] == ["1 files are read resampled to 16000 Hz (soxr_hq), from 8000 Hz (1)",
                             "1 recordings have several channels: averaged to mono (audio.channel: N takes channel N "
                             "instead)"]
    assert prep["test_rows"] == prep["recordings"] == 2
    sf.write(tmp_path / "data" / "test" / "t0.wav", np.zeros(1, np.float32), 16000)  # one sample, padded (probe)
    notes = prepare_test(resolved, tmp_path / "work2")["notes"]
    assert notes[-1] == (f"1 recordings are shorter than a tenth of the 0.5-s window, padded to it (zero): e.g. "
                         f"{tmp_path / 'data' / 'test' / 't0.wav'} (6.25e-05 s)"), notes
    sf.write(tmp_path / "data" / "test" / "t0.wav", np.zeros(24000, np.float32), 16000)  # 1.5 s: its start heard
    notes = prepare_test(resolved, tmp_path / "work3")["notes"]  # (probe: said by 00, not by a bundle)
    assert notes[-1] == ("1 test recordings are longer than the 0.5-s window: each is predicted from its start (unless "
                         "its experiment sets tta.hop_seconds), since the bundle's competition config cuts no windows "
                         "(audio.hop_seconds unset)"), notes


def test_a_mask_rule_over_a_misspelt_column_is_refused_by_stage_00(tmp_path):
    """It was first met by 04, after every model was trained (probe)."""
    make_toy_competition(tmp_path / "data")
    cfg = yaml.safe_load((tmp_path / "data" / "toy.yaml").read_text())
    cfg["decision"] = {"mask": [{"where": "gender == 'M'", "classes": ["a"]}]}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(cfg))
    r = stage("00_prepare.py", tmp_path / "m.yaml", "--data-dir", tmp_path / "data", "--output-dir", tmp_path / "out",
              check=False)
    assert r.returncode == 1 and "rule \"gender == 'M'\" cannot be evaluated over the competition's metadata columns []" in r.stderr, r.stderr
    assert not (tmp_path / "out" / "prepare.record.json").exists()  # 01 and 02 refuse to start from it (review)


def test_the_default_competition_config_is_found_from_any_folder(breathing_subset, tmp_path):
    """``00_prepare.py --data-dir DIR`` without a config looked for configs/data/breathing.yaml in
    the shell's folder (probe): it is this project's, wherever the command starts."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, ROOT / "00_prepare.py", "--data-dir", breathing_subset, "--output-dir", "o"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "train: 48 recordings" in r.stdout, r.stderr[-2000:]
    assert len(pd.read_csv(tmp_path / "o" / "folds.csv")) == 48


def test_labels_that_differ_only_in_case_or_number_format_are_said(tmp_path):
    """Without `classes:`, 'Normal' and 'normal', or '3' and '3.0', became separate classes unsaid (probe)."""
    comp = make_toy_competition(tmp_path / "data", n=16)
    train = pd.read_csv(tmp_path / "data/train.csv")
    train["label"] = ["a", "A", "b", "3", "3.0", "b", "a", "b"] * 2
    train.to_csv(tmp_path / "data/train.csv", index=False)
    comp = dict(comp, task="multiclass", classes=None, positive=None)
    found = prepare(comp, tmp_path / "out")
    assert ("differ only in case or number format are separate classes: '3' / '3.0'; 'A' / 'a': list `classes:`"
            in " ".join(found["warnings"])), found["warnings"]
    train["label"] = ["a", "b"] * 8
    train.to_csv(tmp_path / "data/train.csv", index=False)
    assert not any("number format" in w for w in prepare(comp, tmp_path / "out2")["warnings"])


def test_values_spelt_two_ways_are_said(tmp_path):
    """A patient, a metadata category or a slice value spelt two ways (case, spaces) are two values:
    00 says so (one patient crossed the folds unsaid: probe); so is a label sample naming a label
    that is no class of the competition (the probabilities format said it, the label one did not)."""
    make_toy_competition(tmp_path / "data")
    train = pd.read_csv(tmp_path / "data/train.csv")
    train["patient"] = ["P1", "p1", "P2", "P2 ", "P3", "P3", "P4", "P4", "P5", "P5", "P6", "P6"]
    train["sex"] = ["F", "M", "f", "M", "F", "M", "F", "M", "F", "M", "F", "M"]
    train.to_csv(tmp_path / "data/train.csv", index=False)
    pd.DataFrame({"id": ["t1", "t0"], "label": ["a", "polyp"]}).to_csv(tmp_path / "data/sample.csv", index=False)
    pd.DataFrame({"id": ["t0", "t1"], "sex": ["F", "M"]}).to_csv(tmp_path / "data/test.csv", index=False)
    cfg = yaml.safe_load((tmp_path / "data/toy.yaml").read_text())
    cfg.update(groups={"column": "patient"}, metadata={"numeric": [], "categorical": ["sex"]}, slices=["sex"])
    warnings = prepare(_competition(tmp_path, cfg), tmp_path / "out")["warnings"]
    spelt = "values that differ only in case, spaces or number format are separate values: "
    assert f"groups: {spelt}'P1' / 'p1'; 'P2' / 'P2 ': write each alike in the CSV if it is one" in warnings, warnings
    assert f"metadata.categorical 'sex': {spelt}'F' / 'f'" in "\n".join(warnings)
    assert f"slices column 'sex': {spelt}'F' / 'f'" in "\n".join(warnings)
    assert f"{tmp_path / 'data/sample.csv'}: column 'label' holds label(s) that are no class of the competition " \
           "('polyp'): the submission never writes them" in "\n".join(warnings)
    # each written alike, and ids that Python's float reads as one number (1_12 and 11_2 as 112, 18 digits
    # rounded together) but are not: nothing said (review), and no category merged; a placeholder sample label
    ids = ["1_12", "11_2", "1e3", "1000", "100000000000000001", "100000000000000002"]
    train.assign(patient=[ids[i // 2] for i in range(12)], sex=[ids[i % 6] for i in range(12)]).to_csv(
        tmp_path / "data/train.csv", index=False)
    pd.DataFrame({"id": ["t0", "t1"], "sex": ["1_12", "1e3"]}).to_csv(tmp_path / "data/test.csv", index=False)
    pd.DataFrame({"id": ["t1", "t0"], "label": "?"}).to_csv(tmp_path / "data/sample.csv", index=False)
    assert not prepare(_competition(tmp_path, cfg), tmp_path / "out2")["warnings"]
    folds = Outputs(tmp_path / "out2").load_split("train")
    assert folds.group.nunique() == 6 and sorted(folds.slice_sex.astype(str).unique()) == sorted(ids)


def test_a_label_sample_naming_no_class_is_said_with_its_likely_cause():
    """A label that is no class: listed in `classes:` if it is one; labels joined by another separator:
    the separator to set; one value in every row (a placeholder): nothing (review)."""
    from pathlib import Path

    from lib.data.prepare import _check_sample_values

    def said(task, cells):
        cfg = {"task": task, "classes": ["a", "b"],
               "submission": {"format": "label", "target_column": "label", "label_separator": ";"}}
        warnings = []
        _check_sample_values(pd.Series(cells), cfg, Path("s.csv"), [], warnings)
        return " ".join(warnings)
    assert "('polyp'): the submission never writes them; list them in `classes:`" in said("multiclass", ["a", "polyp", "b"])
    assert "('a,b'): the submission joins a row's labels with ';': set submission.label_separator" in said(
        "multilabel", ["a,b", "a"])
    assert said("multiclass", ["?", "?", "?"]) == said("multiclass", ["a", "b"]) == ""
