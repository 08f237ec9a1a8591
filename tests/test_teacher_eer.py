import pandas as pd

from bench.teacher_eer import main, markdown


def test_markdown_names_each_teacher_with_its_weights():
    rows = pd.DataFrame([{"teacher": "ge2e", "teacher_source": "pretrained", "dim": 256, "params": 1_420_000,
                          "eer": 0.084, "min_dcf": 0.8242, "speakers": "embedded / test",
                          "teacher_weights": "resemblyzer 0.1.4 (sha256 2edc)"}])
    lines = markdown(rows).splitlines()
    assert lines[2] == "| ge2e | pretrained | 256 | 1.42 M | 8.4 | 0.824 | embedded / test | resemblyzer 0.1.4 (sha256 2edc) |"


def test_an_unknown_teacher_is_one_line_and_exit_2(capsys):
    assert main(["--teachers", "nosuch", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nosuch" in err and "ge2e" in err and len(err.strip().splitlines()) == 1


def test_grid_teachers_keep_each_teachers_own_settings_in_grid_order():
    from pathlib import Path

    from bench.teacher_eer import grid_teachers

    grid = str(Path(__file__).resolve().parents[1] / "ablations" / "teachers.yaml")
    cfgs = grid_teachers(grid, ["eval.split=val"])
    assert [(c.teacher.name, c.teacher.source) for c in cfgs] == [
        ("ge2e", "pretrained"), ("vfl", "pretrained"), ("ecapa", "trained"), ("titanet", "trained"),
        ("wavlm", "trained")]
    steps = {c.teacher.name: c.teacher.train_steps for c in cfgs}
    assert steps["ecapa"] == 1200 and steps["titanet"] == 1000 and {c.eval.split for c in cfgs} == {"val"}


def test_a_missing_grid_is_one_line_and_exit_2(capsys, tmp_path):
    assert main(["--grid", str(tmp_path / "nope.yaml"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope.yaml" in err and len(err.strip().splitlines()) == 1
