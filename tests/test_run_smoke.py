"""End-to-end: ``ablations/smoke.yaml`` through ``bench.run`` (the main job in miniature)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import run

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "ablations" / "smoke.yaml")

REQUIRED = [
    "system", "teacher", "teacher_source", "teacher_weights", "loss", "tau", "alpha", "seed", "condition", "n",
    "si_sdr_mean", "si_sdr_ci_lo", "si_sdr_ci_hi", "si_sdri_mean", "pesq_mean", "stoi_mean", "estoi_mean",
    "pesq_failures", "d_si_sdr_mean", "d_si_sdr_ci_lo", "d_si_sdr_ci_hi", "headroom_si_sdr_mean",
    "recovered_frac", "pse_params", "student_params", "pse_macs_per_s", "extra_macs_per_s",
    "total_macs_per_s", "rtf", "peak_mem_mb", "config_hash", "git_commit", "versions", "device", "date",
    "gate", "gate_threshold", "context_s", "student_inputs", "distill_steps", "skipped_frac",
    # the regime issue: references, control, late metrics, speaker evidence, statistics
    "role", "rule", "ds_si_sdr_mean", "ds_si_sdr_ci_lo", "ds_si_sdr_ci_hi", "p_d_si_sdr", "p_d_si_sdr_holm",
    "headroom_clean_si_sdr_mean", "late_si_sdr_mean", "late_si_sdri_mean", "traj_cos_mean", "out_cos_mean",
    "late_traj_cos_mean", "d_si_sdr_seed_sd", "n_seeds", "train_corpus", "test_corpus", "pse_source",
    # timing: one stream's real-time factor, compute per block, algorithmic latency
    "block_ms_p50", "block_ms_p95", "algo_latency_ms", "batch_rtf", "student_mode",
]


# ``smoke_run`` (the grid run once per test session, shared with report/test_html.py): tests/conftest.py


def test_smoke_completes_with_schema(smoke_run):
    code, out, _, _ = smoke_run
    assert code == 0
    board = pd.read_csv(out / "leaderboard.csv")
    missing = [c for c in REQUIRED if c not in board.columns]
    assert not missing, missing
    systems = set(board["system"])
    assert {"mixture", "nonpersonalized", "static", "oracle", "oracle_clean", "oracle_enroll_clean", "shrink",
            "oracle_target", "student-contrastive", "student-mse", "student-cosine"} <= systems
    assert set(board["condition"]) == {"clean", "competing", "voice_change", "all"}
    assert (board["teacher_source"].dropna() != "").all()
    # no gate in the smoke grid: refiners skip nothing, systems without a refiner have no value
    per = pd.read_csv(out / "per_utterance.csv").merge(pd.read_csv(out / "cells.csv")[["cell_id", "system"]])
    assert (per.loc[per["system"].str.startswith("student-"), "skipped_frac"] == 0.0).all()
    assert per.loc[per["system"] == "static", "skipped_frac"].isna().all()
    for f in ("per_utterance.csv", "cells.csv", "leaderboard.md", "provenance.json", "trajectory.csv"):
        assert (out / f).is_file()
    # late metrics exist exactly on the stream condition; the trajectory on personalized systems
    late = per.groupby("condition")["late_si_sdr"].apply(lambda x: x.notna().all())
    assert late["voice_change"] and not per.loc[per["condition"] != "voice_change", "late_si_sdr"].notna().any()
    assert per.loc[per["system"] == "static", "traj_cos"].notna().all()
    assert per.loc[per["system"] == "nonpersonalized", "traj_cos"].isna().all()
    # every refining system is matched with its control and ceiling at the same rate
    refining = board[(board["role"] == "system") & (board["alpha"] > 0) & (board["condition"] == "clean")]
    assert refining["ds_si_sdr_mean"].notna().all() and refining["headroom_si_sdr_mean"].notna().all()
    traj = pd.read_csv(out / "trajectory.csv")
    assert {"system", "condition", "block", "t_s", "cos_to_target"} <= set(traj.columns)
    assert traj["cos_to_target"].between(-1 - 1e-5, 1 + 1e-5).all()


def test_alpha_zero_reproduces_static_exactly(smoke_run):
    _, out, _, _ = smoke_run
    per = pd.read_csv(out / "per_utterance.csv")
    cells = pd.read_csv(out / "cells.csv")
    static_id = cells.loc[cells["system"] == "static", "cell_id"].iloc[0]
    zero = cells[(cells["system"].str.startswith("student-")) & (cells["alpha"] == 0.0)]
    assert len(zero) == 1
    ref = per[per["cell_id"] == static_id].sort_values(["condition", "utt"])
    for cid in zero["cell_id"]:
        got = per[per["cell_id"] == cid].sort_values(["condition", "utt"])
        np.testing.assert_array_equal(got["si_sdr"].to_numpy(), ref["si_sdr"].to_numpy())
        np.testing.assert_array_equal(got["pesq"].to_numpy(), ref["pesq"].to_numpy())


def test_rerun_is_cached_and_identical(smoke_run):
    _, out, cache, first_s = smoke_run
    before = pd.read_csv(out / "leaderboard.csv")
    t0 = time.perf_counter()
    assert run.main(["--grid", SMOKE, "--out", str(out), "--cache-dir", str(cache), "--no-progress"]) == 0
    again = time.perf_counter() - t0
    after = pd.read_csv(out / "leaderboard.csv")
    # device names the torch thread count, which other tests of the session may have changed
    cols = [c for c in before.columns if c not in ("date", "rtf", "git_commit", "device")]
    pd.testing.assert_frame_equal(before[cols], after[cols])
    strip = lambda d: d.str.replace(r" threads=\d+", "", regex=True)  # noqa: E731
    pd.testing.assert_series_equal(strip(before["device"]), strip(after["device"]))
    assert again < first_s


def test_failing_cell_keeps_the_others(smoke_run, monkeypatch, capsys):
    _, out, cache, _ = smoke_run
    from bench.pipeline import Pipeline

    real = Pipeline.evaluate

    def flaky(self, cfg):
        if cfg.refine.name == "oracle":
            raise RuntimeError("injected failure")
        return real(self, cfg)

    monkeypatch.setattr(Pipeline, "evaluate", flaky)
    out2 = out.parent / "out_fail"
    code = run.main(["--grid", SMOKE, "--out", str(out2), "--cache-dir", str(cache), "--no-progress"])
    assert code == 1
    assert "injected failure" in capsys.readouterr().err
    board = pd.read_csv(out2 / "leaderboard.csv")
    assert "oracle" not in set(board["system"]) and "static" in set(board["system"])


def test_cross_corpus_evaluation_scores_another_corpus(smoke_run, tmp_path):
    """Backbones and students trained on the smoke corpus, scored on every speaker of another corpus
    (a manifest) through ``test_corpus``: nothing is retrained, every row says which corpus is which."""
    from ._data_helpers import make_corpus

    _, _, cache, _ = smoke_run
    other = make_corpus(tmp_path / "other", n_speakers=5, n_utts=3, seconds=2.5, derived=False)
    out = tmp_path / "xcorpus"
    args = ["--grid", SMOKE, "--out", str(out), "--cache-dir", str(cache), "--no-progress",
            "--set", "test_corpus.name=manifest", "--set", f"test_corpus.path={other.manifest_path}",
            "--set", "eval.split=all"]
    assert run.main(args) == 0
    board = pd.read_csv(out / "leaderboard.csv")
    per = pd.read_csv(out / "per_utterance.csv")
    assert set(per["speaker"]) <= set(other.speakers()) and len(set(per["speaker"])) == 4  # n_test = 4
    sys_rows = board[board["system"] != "mixture"]
    assert (sys_rows["train_corpus"] == "embedded").all()
    assert sys_rows["test_corpus"].str.startswith("manifest:").all()
    assert board["d_si_sdr_mean"].notna().any()


def test_bad_grid_value_is_a_clear_error(tmp_path, capsys):
    code = run.main(["--grid", SMOKE, "--set", "refine.alpha=7", "--dry-run"])
    assert code == 2
    err = capsys.readouterr().err
    assert "refine.alpha" in err and "Traceback" not in err
    assert run.main(["--grid", str(tmp_path / "missing.yaml")]) == 2


@pytest.mark.parametrize("value", ["0", "-5", "soon"])
def test_bad_heartbeat_is_refused_by_run_and_sweep_alike(value, capsys):
    from bench import sweep

    for main, args in ((run.main, ["--grid", SMOKE, "--dry-run"]), (sweep.main, ["--grid", SMOKE])):
        with pytest.raises(SystemExit) as exc:
            main([*args, "--heartbeat", value])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert f"{value!r} is out of range" in err and "Traceback" not in err


def test_dry_run_lists_cells(capsys):
    assert run.main(["--grid", SMOKE, "--dry-run"]) == 0
    assert "cells" in capsys.readouterr().out


def test_sweep_runs_resumes_and_records_provenance(smoke_run, tmp_path, capsys):
    import json

    from bench import sweep

    _, _, cache, _ = smoke_run
    out = tmp_path / "sweep"
    args = ["--grid", SMOKE, "--set", f"cache_dir={cache}", "--set", "distill.loss=mse",
            "--param", "refine.alpha=0.0:1.0", "--study", "t", "--out", str(out), "--no-progress"]
    assert sweep.main([*args, "--trials", "2"]) == 0
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 2 and (trials["state"] == "COMPLETE").all()
    assert trials["params_refine.alpha"].between(0.0, 1.0).all()
    assert trials["params_refine.alpha"].nunique() == 2
    assert np.isfinite(trials["value"]).all() and trials["value"].between(-60, 60).all()
    assert (trials["user_attrs_split"] == "val").all()
    assert (trials["user_attrs_n_rows"] == 4 * 3).all()  # n_val x three conditions (n_stream is 4 too)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["split"] == "val" and prov["teacher_source"] == "pretrained" and prov["git_commit"]
    assert "best validation si_sdr" in capsys.readouterr().out
    # the same study resumes from its storage: one more trial, the first two kept
    assert sweep.main([*args, "--trials", "1"]) == 0
    again = pd.read_csv(out / "trials.csv")
    assert len(again) == 3
    pd.testing.assert_series_equal(again["value"].iloc[:2], trials["value"])
    # a total budget over workers: another worker asking for 5 more trials stops at 4 in all
    assert sweep.main([*args, "--trials", "5", "--total-trials", "4"]) == 0
    assert len(pd.read_csv(out / "trials.csv")) == 4
    # the best trial as a grid bench.run accepts, on the test split
    from bench.config import Grid

    best = Grid.load(out / "best.yaml")
    cfg = best.cells()[0].config
    assert cfg.eval.split == "test" and 0.0 <= cfg.refine.alpha <= 1.0 and cfg.distill.loss == "mse"


@pytest.mark.parametrize("param", ["refine.alpha=1:0", "refine.alpha=0:7", "refine.alpha", "nope.key=0:1"])
def test_sweep_bad_param_is_a_clear_error(param, tmp_path, capsys):
    from bench import sweep

    code = sweep.main(["--grid", SMOKE, "--set", f"cache_dir={tmp_path}", "--param", param, "--trials", "1",
                       "--out", str(tmp_path / "o"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_interrupted_rerun_keeps_previous_results(smoke_run, monkeypatch, capsys):
    """A re-run into a finished results folder writes into a partial folder; interrupting it leaves
    the previous leaderboard byte for byte, and the next complete run swaps its results in."""
    import shutil

    _, shared, cache, _ = smoke_run
    # a copy: the swapped-in --no-figures run must not replace the shared folder that
    # report/test_html.py reads (figures, report.html, example), whatever the test order
    out = shared.parent / "out_interrupt"
    shutil.copytree(shared, out)
    before = (out / "leaderboard.csv").read_bytes()
    from bench.pipeline import Pipeline

    real = Pipeline.evaluate
    calls = {"n": 0}

    def interrupt(self, cfg):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, cfg)

    monkeypatch.setattr(Pipeline, "evaluate", interrupt)
    args = ["--grid", SMOKE, "--out", str(out), "--cache-dir", str(cache), "--no-progress", "--no-figures"]
    assert run.main(args) == 130
    assert "untouched" in capsys.readouterr().err
    assert (out / "leaderboard.csv").read_bytes() == before
    partial = run.partial_dir(out)
    assert len(pd.read_csv(partial / "cells.csv")) == 3  # the mixture and the two completed cells
    monkeypatch.setattr(Pipeline, "evaluate", real)
    assert run.main(args) == 0
    assert not partial.exists() and (out / "leaderboard.csv").is_file()


def test_unwritable_output_is_one_line_error(tmp_path, capsys):
    import os

    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    try:
        if os.access(ro, os.W_OK):  # root ignores permissions
            pytest.skip("running as root: a read-only folder is still writable")
        code = run.main(["--grid", SMOKE, "--out", str(ro / "res"), "--cache-dir", str(tmp_path / "c"), "--no-progress"])
    finally:
        os.chmod(ro, 0o700)
    assert code == 2
    err = capsys.readouterr().err
    assert "cannot write results" in err and "Traceback" not in err


def test_bad_bootstrap_is_rejected_before_running(capsys):
    assert run.main(["--grid", SMOKE, "--bootstrap", "-5", "--dry-run"]) == 2
    assert "--bootstrap=-5" in capsys.readouterr().err
    assert run.main(["--grid", SMOKE, "--set", "eval.n_bootstrap=0", "--dry-run"]) == 2


@pytest.mark.slow
def test_sigkill_at_a_random_point_then_rerun_gives_every_cell_once(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    cache, out = tmp_path / "cache", tmp_path / "out"
    cmd = [sys.executable, "-m", "bench.run", "--grid", SMOKE, "--out", str(out), "--cache-dir", str(cache),
           "--no-progress", "--no-figures"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(float(rng.uniform(5.0, 60.0)))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert subprocess.run(cmd, cwd=ROOT, capture_output=True).returncode == 0
    cells = pd.read_csv(out / "cells.csv")
    per = pd.read_csv(out / "per_utterance.csv")
    assert cells["cell_id"].is_unique
    assert not per.duplicated(["cell_id", "condition", "utt"]).any()
    assert set(per["cell_id"]) == set(cells["cell_id"])
