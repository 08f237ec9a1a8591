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
