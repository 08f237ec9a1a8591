"""In-suite trained teachers shipped in the zoo (zoo/teachers/): found by training key, verified,
copied into the cache instead of trained, and written by ``python -m bench.zoo add-teachers``."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import zoo
from bench.cache import Cache
from bench.config import ConfigError, TeacherConfig, load_config
from bench.teachers import _train, load_teacher
from bench.zoo import __main__ as zoo_cli
from tests._kd_helpers import FakeCorpus

SMOKE = str(Path(__file__).resolve().parents[2] / "ablations" / "smoke.yaml")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("PSE_KD_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _ship(tmp_path, cfg, corpus) -> tuple[dict, object]:
    """Train ``cfg`` in a build cache and write its zoo entry under ``tmp_path/zoo``."""
    build = Cache(tmp_path / "build")
    t = load_teacher(cfg, build, corpus, "cpu")
    key = _train.trained_key(cfg.name, cfg, corpus.key)
    stage = build.stage_dir("teacher", key)
    (art,) = [p for p in stage.iterdir() if p.name != "DONE"]
    rec = zoo_cli.add_teacher(art, cfg, key, t, build.read_meta("teacher", key), {"key": corpus.key}, "pytest",
                              zoo_dir=tmp_path / "zoo")
    return rec, t


def _no_training(*_a, **_k):
    raise AssertionError("trained although the zoo holds this teacher")


def test_shipped_teacher_is_copied_not_trained(tmp_path, monkeypatch):
    corpus = FakeCorpus(n_train=3, n_val=2, n_test=0, n_utts=2)
    cfg = TeacherConfig(name="ge2e", source="trained", train_steps=3)
    rec, built = _ship(tmp_path, cfg, corpus)
    assert rec["file"].startswith(rec["name"] + "/") and len(rec["files"]) == 1
    assert rec["sha256"] == zoo.files_digest(rec["files"]) and rec["identity"] == built.identity
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path / "zoo")
    monkeypatch.setattr(_train, "train_speaker_encoder", _no_training)
    fresh = Cache(tmp_path / "fresh")
    t = load_teacher(cfg, fresh, corpus, "cpu")
    assert t.identity == built.identity  # the same weights, so every downstream key is the same
    assert f"shipped in the zoo as teachers/{rec['name']}" in t.weights_origin and "val EER" in t.weights_origin
    meta = fresh.read_meta("teacher", rec["stage_key"])
    assert meta["source"].startswith("zoo:") and meta["steps"] == 3
    assert load_teacher(cfg, fresh, corpus, "cpu").identity == t.identity  # then from the cache


def test_train_source_train_ignores_the_zoo(tmp_path, monkeypatch):
    corpus = FakeCorpus(n_train=3, n_val=2, n_test=0, n_utts=2)
    cfg = TeacherConfig(name="ge2e", source="trained", train_steps=3)
    _ship(tmp_path, cfg, corpus)
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path / "zoo")
    monkeypatch.setattr(_train, "train_speaker_encoder", _no_training)
    train_here = TeacherConfig(name="ge2e", source="trained", train_steps=3, train_source="train")
    with pytest.raises(AssertionError, match="trained although"):
        load_teacher(train_here, Cache(tmp_path / "other"), corpus, "cpu")
    cache = Cache(tmp_path / "copied")
    load_teacher(cfg, cache, corpus, "cpu")  # the zoo's copy lands in this cache
    with pytest.raises(AssertionError, match="trained although"):  # and is not taken for one trained here
        load_teacher(train_here, cache, corpus, "cpu")


def test_damaged_missing_or_extra_teacher_files_are_named(tmp_path, monkeypatch):
    corpus = FakeCorpus(n_train=3, n_val=2, n_test=0, n_utts=2)
    cfg = TeacherConfig(name="ge2e", source="trained", train_steps=3)
    rec, _ = _ship(tmp_path, cfg, corpus)
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path / "zoo")
    (rel,) = rec["files"]
    f = tmp_path / "zoo" / zoo.TEACHERS / rec["name"] / rel
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    f.write_bytes(bytes(raw))
    with pytest.raises(zoo.ZooError, match=f"{f.name} is damaged.*add-teachers"):
        load_teacher(cfg, Cache(tmp_path / "fresh"), corpus, "cpu")
    f.unlink()
    with pytest.raises(zoo.ZooError, match="missing"):
        zoo.teacher_artifact(zoo.find_teacher(rec["stage_key"]))
    assert zoo_cli.main(["verify", "--zoo-dir", str(tmp_path / "zoo")]) == 1


def test_folder_artifact_round_trip(tmp_path, monkeypatch):
    """A library folder (speechbrain's ECAPA) is shipped file by file and loads back the same."""
    pytest.importorskip("speechbrain")
    corpus = FakeCorpus(n_train=3, n_val=2, n_test=0, n_utts=2)
    cfg = TeacherConfig(name="ecapa", source="trained", train_steps=2, train_size="tiny")
    rec, built = _ship(tmp_path, cfg, corpus)
    assert rec["file"].endswith("/speechbrain") and len(rec["files"]) > 1
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path / "zoo")
    monkeypatch.setattr(_train, "train_speaker_encoder", _no_training)
    assert load_teacher(cfg, Cache(tmp_path / "fresh"), corpus, "cpu").identity == built.identity
    stray = tmp_path / "zoo" / zoo.TEACHERS / rec["file"] / "stray.bin"
    stray.write_bytes(b"x")  # a folder holding a file its entry does not list is not the teacher shipped
    with pytest.raises(zoo.ZooError, match="does not list: .*stray.bin"):
        zoo.teacher_artifact(zoo.find_teacher(rec["stage_key"]))


def test_train_source_is_checked_and_left_out_of_the_config_at_its_default():
    with pytest.raises(ConfigError, match="teacher.train_source.*zoo, train"):
        load_config(None, ["teacher.train_source=hub"])
    assert "train_source" not in load_config(None, []).to_dict()["teacher"]
    assert load_config(None, ["teacher.train_source=train"]).to_dict()["teacher"]["train_source"] == "train"


def test_add_teachers_command_writes_verifies_lists_then_skips(smoke_run, tmp_path, capsys):
    _, _, cache, _ = smoke_run
    z = str(tmp_path / "zoo")
    args = ["add-teachers", "--grid", SMOKE, "--set", "teacher.source=trained", "--set", "teacher.train_steps=3",
            "--set", f"cache_dir={cache}", "--zoo-dir", z, "--no-progress"]
    assert zoo_cli.main(args) == 0
    (rec,) = zoo.teacher_entries(z).values()
    assert rec["command"] == " ".join(["python -m bench.zoo", *args]) and rec["teacher"]["train_steps"] == 3
    assert "trained in-suite: ge2e" in rec["teacher_weights"]
    capsys.readouterr()
    assert zoo_cli.main(args) == 0
    assert "skipped, in the zoo as" in capsys.readouterr().out
    assert zoo_cli.main(["verify", "--zoo-dir", z]) == 0
    assert f"teachers/{rec['file']}" in capsys.readouterr().out
    assert zoo_cli.main(["list", "--zoo-dir", z]) == 0
    assert "val EER" in capsys.readouterr().out
    assert zoo_cli.main(["add-teachers", "--grid", SMOKE, "--zoo-dir", z, "--set", f"cache_dir={cache}"]) == 2


def test_teachers_filter_names_a_bad_choice(capsys):
    assert zoo_cli.main(["add-teachers", "--grid", SMOKE, "--teachers", "ecapa"]) == 2
    err = capsys.readouterr().err
    assert "--teachers ecapa: not a teacher of" in err and "choices: ge2e" in err


def test_a_teacher_file_over_the_zoo_limit_is_refused(tmp_path, monkeypatch):
    corpus = FakeCorpus(n_train=3, n_val=2, n_test=0, n_utts=2)
    monkeypatch.setattr(zoo_cli, "MAX_FILE_BYTES", 1000)
    with pytest.raises(zoo.ZooError, match=r"ge2e.pt is .* MiB, over the zoo's"):
        _ship(tmp_path, TeacherConfig(name="ge2e", source="trained", train_steps=3), corpus)
    assert not (tmp_path / "zoo" / zoo.TEACHERS).exists()
