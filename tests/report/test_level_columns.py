"""Every leaderboard row says at which operating level, and with which attenuation limit, its
cell was scored (bench.grid.cell_row)."""

from __future__ import annotations

import pytest

from bench.config import ExperimentConfig
from bench.grid import cell_row


@pytest.mark.parametrize(("data", "level", "limit"), [
    ({}, "hard", 26.0),
    ({"level": "field", "pse": {"atten_lim_db": 8.0}}, "field", 8.0),
    ({"level": "field", "pse": {"atten_lim_db": 0.0, "personalized": False}, "refine": {"name": "static"}}, "field", 0.0),
])
def test_row_names_the_level_and_the_limit(data, level, limit):
    row = cell_row(ExperimentConfig.from_dict(data), "cid", {}, {}, {})
    assert row["level"] == level
    assert row["atten_lim_db"] == limit
