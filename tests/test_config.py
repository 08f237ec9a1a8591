from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.config import ConfigError, ExperimentConfig, Grid, load_config, parse_override


def test_defaults_validate_and_roundtrip_yaml():
    cfg = ExperimentConfig.from_dict({})
    again = ExperimentConfig.from_yaml(cfg.to_yaml())
    assert again == cfg


@settings(max_examples=25, deadline=None)
@given(
    alpha=st.floats(0.0, 1.0, allow_nan=False),
    tau=st.floats(1e-3, 10.0, allow_nan=False),
    seed=st.integers(0, 2**31 - 1),
    loss=st.sampled_from(["contrastive", "mse", "cosine"]),
)
def test_roundtrip_random_values(alpha, tau, seed, loss):
    cfg = ExperimentConfig.from_dict(
        {"seed": seed, "refine": {"alpha": alpha}, "distill": {"tau": tau, "loss": loss}}
    )
    assert ExperimentConfig.from_yaml(cfg.to_yaml()) == cfg


def test_unknown_key_is_error_naming_key_and_choices():
    with pytest.raises(ConfigError) as err:
        ExperimentConfig.from_dict({"refine": {"alpah": 0.1}})
    msg = str(err.value)
    assert "refine.alpah" in msg and "alpha" in msg and "block_s" in msg


def test_unknown_top_level_key():
    with pytest.raises(ConfigError, match="'tecaher'"):
        ExperimentConfig.from_dict({"tecaher": {}})


def test_bad_choice_names_key_value_and_choices():
    with pytest.raises(ConfigError) as err:
        ExperimentConfig.from_dict({"distill": {"loss": "infonce"}})
    msg = str(err.value)
    assert "distill.loss" in msg and "infonce" in msg
    assert "contrastive" in msg and "mse" in msg and "cosine" in msg


def test_out_of_range_names_range():
    with pytest.raises(ConfigError) as err:
        ExperimentConfig.from_dict({"refine": {"alpha": 1.5}})
    assert "refine.alpha" in str(err.value) and "1.5" in str(err.value) and "[0.0, 1.0]" in str(err.value)
    with pytest.raises(ConfigError, match=r"distill\.tau"):
        ExperimentConfig.from_dict({"distill": {"tau": 0}})


def test_pse_schedule_and_spectral_loss_validated():
    with pytest.raises(ConfigError, match=r"pse\.lr_schedule.*'linear'.*constant.*cosine"):
        ExperimentConfig.from_dict({"pse": {"lr_schedule": "linear"}})
    with pytest.raises(ConfigError, match=r"pse\.spec_ffts.*\[510\]"):
        ExperimentConfig.from_dict({"pse": {"spec_ffts": [510]}})
    with pytest.raises(ConfigError, match=r"pse\.spec_ffts"):
        ExperimentConfig.from_dict({"pse": {"spec_ffts": []}})
    assert ExperimentConfig.from_dict({"pse": {"spec_ffts": [512, 256]}}).pse.spec_ffts == [512, 256]


def test_competing_sir_range_validated():
    with pytest.raises(ConfigError, match=r"eval\.competing_sir_db.*\[5\.0, -5\.0\]"):
        ExperimentConfig.from_dict({"eval": {"competing_sir_db": [5.0, -5.0]}})
    assert ExperimentConfig.from_dict({"eval": {"competing_sir_db": [0, 5]}}).eval.competing_sir_db == [0, 5]


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match=r"seed.*integer"):
        ExperimentConfig.from_dict({"seed": "abc"})
    with pytest.raises(ConfigError, match=r"refine\.alpha.*number"):
        ExperimentConfig.from_dict({"refine": {"alpha": "fast"}})


def test_local_teacher_needs_path():
    with pytest.raises(ConfigError, match="teacher.path"):
        ExperimentConfig.from_dict({"teacher": {"source": "local"}})


def test_overrides():
    cfg = load_config(None, ["refine.alpha=0.3", "distill.loss=mse", "eval.conditions=[clean, short]"])
    assert cfg.refine.alpha == 0.3 and cfg.distill.loss == "mse"
    assert cfg.eval.conditions == ["clean", "short"]
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_override("refine.alpha")


def test_grid_expansion_cartesian_and_systems(tmp_path):
    text = """
name: g
base: {corpus: {size: smoke}}
grid: {seed: [0, 1]}
systems:
  - {refine.name: static}
  - {refine.name: ema, distill.loss: [contrastive, mse, cosine], refine.alpha: [0.1, 0.5]}
"""
    path = tmp_path / "g.yaml"
    path.write_text(text)
    cells = Grid.load(path).cells()
    assert len(cells) == 2 * (1 + 3 * 2)
    combos = {(c.config.seed, c.config.refine.name, c.config.distill.loss, c.config.refine.alpha) for c in cells}
    assert (1, "ema", "mse", 0.5) in combos
    assert all(c.config.corpus.size == "smoke" and c.config.name == "g" for c in cells)


def test_grid_dedups_identical_cells():
    grid = Grid.from_dict({"systems": [{"refine.name": "static"}, {"refine.name": "static"}]})
    assert len(grid.cells()) == 1


def test_grid_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        Grid.load(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="unknown grid key 'sytems'"):
        Grid.from_dict({"sytems": []})
    with pytest.raises(ConfigError, match="empty list"):
        Grid.from_dict({"grid": {"seed": []}})
    bad = Grid.from_dict({"grid": {"refine.alpha": [0.1, 2.0]}})
    with pytest.raises(ConfigError, match=r"refine\.alpha=2\.0"):
        bad.cells()


def test_grid_overrides_apply_to_base():
    grid = Grid.from_dict({"base": {"corpus": {"size": "default"}}}, overrides=["corpus.size=smoke"])
    assert grid.cells()[0].config.corpus.size == "smoke"


def test_shipped_grids_expand():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "ablations"
    files = sorted(root.glob("*.yaml"))
    assert files, "no grids shipped"
    for f in files:
        cells = Grid.load(f).cells()
        assert cells, f
        yaml.safe_dump(cells[0].config.to_dict())
