"""``python -m bench.pse``: per-system overrides and clear errors for bad input."""

from __future__ import annotations

import json

import pytest

from bench.config import ConfigError
from bench.pse import __main__ as cli
from bench.pse import train as pse_train
from tests.pse.test_pdfnet2 import FakeSampler, FakeTeacher, _fake_corpus


def test_system_overrides_are_grouped_by_system():
    got = cli._system_overrides(["personalized:pse.seed=1", "personalized:pse.lr=0.001", "baseline:pse.seed=2"],
                                ["personalized", "baseline"])
    assert got == {"personalized": ["pse.seed=1", "pse.lr=0.001"], "baseline": ["pse.seed=2"]}


@pytest.mark.parametrize("item, match", [
    ("pse.seed=1", "expected SYSTEM:pse.KEY=VALUE"),
    ("baseline:pse.seed=1", "expected SYSTEM:pse.KEY=VALUE"),  # not among --systems
    ("personalized:eval.n_test=3", "only pse.\\* keys"),
    ("personalized:pse.seed", "override 'pse.seed' must look like key.sub=value"),
])
def test_bad_system_override_is_named(item, match):
    with pytest.raises(ConfigError, match=match):
        cli._system_overrides([item], ["personalized"])


@pytest.mark.parametrize("argv, needle", [
    (["-o", "pse.size=huge"], "pse.size='huge' is not allowed; choices: tiny, cpu"),
    (["--systems", "personalized,teacher"], "--systems has 'teacher'; choices: personalized, baseline"),
    (["--system-override", "personalized:pse.size=huge"], "pse.size='huge' is not allowed"),
])
def test_bad_input_exits_2_with_a_message_not_a_traceback(argv, needle, capsys):
    assert cli.main([*argv, "--train-only"]) == 2
    assert needle in capsys.readouterr().err


def test_system_override_reaches_only_its_system(monkeypatch, tmp_path, capsys):
    import bench.data.corpus as corpus_mod
    import bench.teachers as teachers_mod

    monkeypatch.setattr(pse_train, "_make_sampler", FakeSampler)
    monkeypatch.setattr(pse_train, "VAL_MIN", 2)
    monkeypatch.setattr(corpus_mod, "load_corpus", lambda cfg, cache: _fake_corpus())
    monkeypatch.setattr(teachers_mod, "load_teacher", lambda cfg, cache, corpus, device: FakeTeacher())
    tiny = ["pse.size=tiny", "pse.train_steps=2", "pse.batch_size=2", "pse.segment_s=0.5", "pse.val_every=2",
            "eval.n_val=2", "pse.source=train", f"cache_dir={tmp_path}"]
    argv = [x for o in tiny for x in ("-o", o)]
    assert cli.main([*argv, "--train-only", "--device", "cpu",
                     "--system-override", "personalized:pse.train_steps=3"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows["personalized"]["steps"] == 3 and rows["baseline"]["steps"] == 2
    assert rows["personalized"]["pse_source"] == rows["baseline"]["pse_source"] == "trained"


@pytest.mark.parametrize("argv", [["--n-test", "0"], ["--test-s", "-1"]])
def test_bad_sizes_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv, "--train-only"])
    assert exc.value.code == 2 and "--n-test must be >= 1 and --test-s > 0" in capsys.readouterr().err
