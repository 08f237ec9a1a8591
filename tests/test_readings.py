"""The two readings of the paper's method (``reading: teacher | student``) and shipped students."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from bench import run, zoo
from bench.config import ConfigError, ExperimentConfig
from bench.losses import distill_slice
from bench.pipeline import eval_slice
from bench.pipeline.space import StudentSpaceTeacher, state_digest
from bench.refine import system_name

ROOT = Path(__file__).resolve().parents[1]


def _cfg(**kw) -> ExperimentConfig:
    return ExperimentConfig.from_dict(kw)


def test_reading_is_checked_and_left_out_of_old_hashes_at_its_default():
    with pytest.raises(ConfigError, match="reading.*'sideways'.*teacher, student"):
        _cfg(reading="sideways")
    with pytest.raises(ConfigError, match="distill.source.*'hub'.*zoo, train"):
        _cfg(distill={"source": "hub"})
    d = ExperimentConfig().to_dict()
    assert "reading" not in d and "source" not in d["distill"]
    assert _cfg(reading="student").to_dict()["reading"] == "student"
    assert _cfg(distill={"source": "train"}).to_dict()["distill"]["source"] == "train"
    # where a student comes from is not what it is
    assert distill_slice(_cfg(distill={"source": "train"}).distill) == distill_slice(ExperimentConfig().distill)


def test_student_reading_keys_and_labels():
    static = _cfg(refine={"name": "static"})
    s_static = replace(static, reading="student")
    assert "reading" not in eval_slice(static) and "student" not in eval_slice(static)
    assert eval_slice(s_static)["reading"] == "student" and "distill" in eval_slice(s_static)
    # the space is the student's: another loss is another static baseline
    mse = replace(s_static, distill=replace(s_static.distill, loss="mse"))
    assert eval_slice(mse) != eval_slice(s_static)
    # a backbone without embedding has no space: the twin is shared by both readings
    twin = replace(static, pse=replace(static.pse, personalized=False))
    assert eval_slice(twin) == eval_slice(replace(twin, reading="student"))
    assert system_name(s_static) == "static@student-space-contrastive"
    ema = replace(s_static, refine=replace(s_static.refine, name="ema", alpha=0.1))
    assert system_name(ema) == "student@student-space-contrastive"
    assert system_name(replace(ema, reading="teacher")) == "student-contrastive"


class _Lin(torch.nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.w = torch.nn.Linear(160, 8)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.w(wav.reshape(wav.shape[0], -1, 160).mean(1))


class _Real:
    name, dim, identity, weights_origin = "ge2e", 8, "ge2e:pretrained:abc", "packaged weights"


def test_student_space_teacher_embeds_with_the_student_and_names_its_weights(tmp_path):
    a, b = _Lin(0), _Lin(1)
    ta = StudentSpaceTeacher(a, _Real(), "k" * 16, "contrastive")
    wav = torch.randn(3, 1600)
    np.testing.assert_allclose(ta.embed(wav).numpy(), torch.nn.functional.normalize(a(wav), dim=-1).detach().numpy(),
                                  rtol=0, atol=1e-7)
    assert ta.identity.startswith("student[ge2e:pretrained:abc]:kkkk")
    assert "distilled from ge2e (packaged weights)" in ta.weights_origin
    # other weights under the same key are another space (a backbone is never reused across them)
    assert StudentSpaceTeacher(b, _Real(), "k" * 16, "contrastive").identity != ta.identity
    # the digest is of the weights, not of a file: the same after a save and load
    torch.save(a.state_dict(), tmp_path / "a.pt")
    c = _Lin(5)
    c.load_state_dict(torch.load(tmp_path / "a.pt", weights_only=True))
    assert state_digest(c) == state_digest(a)


def test_a_shipped_student_is_loaded_and_a_damaged_one_refused(tmp_path, monkeypatch):
    from bench.cache import Cache, atomic_write_json
    from bench.distill import STAGE, _from_zoo

    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path / "zoo")
    d = tmp_path / "zoo" / zoo.STUDENTS
    d.mkdir(parents=True)
    torch.save(_Lin(0).state_dict(), d / "s.pt")
    rec = {"name": "s", "file": "s.pt", "sha256": zoo.sha256(d / "s.pt"), "stage_key": "abc123", "info": {"steps": 7}}
    atomic_write_json(d / "s.json", rec)
    cache = Cache(tmp_path / "cache")
    assert not _from_zoo(cache, "other-key")
    assert _from_zoo(cache, "abc123") and cache.is_done(STAGE, "abc123")
    meta = cache.read_meta(STAGE, "abc123")
    assert meta["steps"] == 7 and meta["source"].startswith("zoo:")
    assert (cache.stage_dir(STAGE, "abc123") / "student.pt").read_bytes() == (d / "s.pt").read_bytes()
    (d / "s.pt").write_bytes(b"damaged")
    with pytest.raises(zoo.ZooError, match="damaged"):
        _from_zoo(Cache(tmp_path / "cache2"), "abc123")


@pytest.fixture(scope="module")
def student_space_run(tmp_path_factory):
    """A smoke-sized grid in the student-space reading through ``bench.run``."""
    base = tmp_path_factory.mktemp("space")
    smoke = yaml.safe_load((ROOT / "ablations" / "smoke.yaml").read_text())
    smoke["base"]["eval"]["conditions"] = ["clean", "voice_change"]
    smoke["systems"] = [  # the teacher space's static is added: every student-space cell is compared with it
        {"reading": "student", "refine.name": "ema", "refine.alpha": [0.0, 0.5]},
        {"reading": "student", "baseline": "oracle", "refine.alpha": 0.5},
    ]
    grid = base / "space.yaml"
    grid.write_text(yaml.safe_dump(smoke))
    out = base / "out"
    code = run.main(["--grid", str(grid), "--out", str(out), "--cache-dir", str(base / "cache"), "--no-progress"])
    return code, out


def test_student_space_cells_run_in_the_students_space(student_space_run):
    code, out = student_space_run
    assert code == 0
    cells = pd.read_csv(out / "cells.csv")
    per = pd.read_csv(out / "per_utterance.csv")
    by = dict(zip(cells["system"], cells["cell_id"], strict=False))
    assert {"static", "static@student-space-contrastive", "student@student-space-contrastive",
            "shrink@student-space-contrastive", "oracle_target@student-space-contrastive",
            "oracle@student-space-contrastive"} <= set(by)
    space = cells[cells["system"].str.endswith("@student-space-contrastive")]
    assert (space["reading"] == "student").all() and (space["loss"] == "contrastive").all()
    assert space["teacher_weights"].str.startswith("student space: contrastive student").all()
    # its own backbone, conditioned on the student's embedding
    teacher_key = cells.loc[cells["system"] == "static", "pse_key"].iloc[0]
    assert (space["pse_key"] != teacher_key).all() and space["pse_key"].nunique() == 1

    def scores(cid):
        return per[per["cell_id"] == cid].sort_values(["condition", "utt"])["si_sdr"].to_numpy()

    stu = cells[cells["system"] == "student@student-space-contrastive"]
    zero = stu.loc[stu["alpha"] == 0.0, "cell_id"].iloc[0]
    half = stu.loc[stu["alpha"] == 0.5, "cell_id"].iloc[0]
    # alpha 0 is its own static baseline bit for bit, not the teacher space's
    np.testing.assert_array_equal(scores(zero), scores(by["static@student-space-contrastive"]))
    assert not np.array_equal(scores(zero), scores(by["static"]))
    # the student refines with the very encoder the space is made of: the same as the "teacher" oracle
    np.testing.assert_allclose(scores(half), scores(by["oracle@student-space-contrastive"]), rtol=0, atol=1e-5)
    assert not np.array_equal(scores(half), scores(zero))
    board = pd.read_csv(out / "leaderboard.csv")
    row = board[(board["system"] == "student@student-space-contrastive") & (board["alpha"] == 0.5)
                & (board["condition"] == "all")]
    assert row["d_si_sdr_mean"].notna().all() and row["ds_si_sdr_mean"].notna().all()
    # and across the readings, paired on the same mixtures: vs the teacher space's static
    per_all = per.merge(cells[["cell_id", "system"]])
    s_static = per_all[per_all["system"] == "static@student-space-contrastive"].set_index(["condition", "utt"])
    t_static = per_all[per_all["system"] == "static"].set_index(["condition", "utt"])
    want = (s_static["si_sdr"] - t_static["si_sdr"]).mean()
    got = board[(board["system"] == "static@student-space-contrastive") & (board["condition"] == "all")]
    assert got["dt_si_sdr_mean"].iloc[0] == pytest.approx(want, abs=1e-9)
    assert board.loc[board["system"] == "static", "dt_si_sdr_mean"].isna().all()


def test_the_student_stays_in_inference_mode_after_embedding():
    """The space's student is also the refiner's: embedding must not leave it in training mode
    (BatchNorm on batch statistics, running buffers moved)."""
    from bench import registry
    from bench.config import StudentConfig

    s = registry.get("student", "tiny")(StudentConfig(), 8).eval()
    t = StudentSpaceTeacher(s, _Real(), "k" * 16, "contrastive")
    before = state_digest(s)
    t.embed(torch.randn(2, 16000))
    assert not s.training and not t.training
    s(torch.randn(2, 16000))
    assert state_digest(s) == before


def test_the_readings_figure_puts_both_spaces_on_the_teacher_spaces_static(student_space_run):
    from bench.report.figures import readings_points

    _, out = student_space_run
    assert (out / "figures" / "readings.png").is_file()
    board = pd.read_csv(out / "leaderboard.csv")
    pts = readings_points(board)
    assert set(pts["space"]) == {"teacher space", "student-space-contrastive"}
    assert (pts.loc[(pts["space"] == "teacher space") & (pts["role"] == "baseline"), "gain"] == 0).all()
    s = pts[(pts["space"] == "student-space-contrastive") & (pts["role"] == "baseline") & (pts["condition"] == "all")]
    want = board.loc[(board["system"] == "static@student-space-contrastive") & (board["condition"] == "all"),
                     "dt_si_sdr_mean"]
    assert s["gain"].to_numpy() == pytest.approx(want.to_numpy())
    # a run without the student-space reading has no such figure, and says why
    assert readings_points(board[~board["system"].str.contains("@")].drop(columns="dt_si_sdr_mean")).empty


def test_paired_table_of_two_cells_matches_the_leaderboards_comparison(student_space_run):
    from bench.tables import main, paired_table

    _, out = student_space_run
    per, cells = pd.read_csv(out / "per_utterance.csv"), pd.read_csv(out / "cells.csv")
    board = pd.read_csv(out / "leaderboard.csv")
    row = board[(board["system"] == "static@student-space-contrastive") & (board["condition"] == "all")].iloc[0]
    text = paired_table(per, cells, [("static@student-space-contrastive", "static")])
    pooled = text.splitlines()[2].split(" | ")[-1].strip(" |*")
    assert pooled == f"{row['dt_si_sdr_mean']:+.2f} [{row['dt_si_sdr_ci_lo']:.2f}, {row['dt_si_sdr_ci_hi']:.2f}]"
    with pytest.raises(ValueError, match="names 2 cells"):
        paired_table(per, cells, [("student@student-space-contrastive", "static")])
    assert main(["--run", str(out), "--pair", "student@student-space-contrastive,alpha=0.5", "static"]) == 0
    assert main(["--run", str(out), "--pair", "nosuch", "static"]) == 2


def test_the_readings_figure_draws_more_systems_than_one_palette_holds(tmp_path):
    """The committed two-reading run has 12 systems in the figure; with ten colours the 11th had
    none (a KeyError, and no figure)."""
    from pathlib import Path

    from bench.report.figures import readings, readings_points

    board = pd.read_csv(Path(__file__).parents[1] / "results" / "student_space_confirm" / "leaderboard.csv")
    assert readings_points(board)["base"].nunique() > 10
    readings(board, tmp_path / "readings")
    assert (tmp_path / "readings.png").stat().st_size > 0
