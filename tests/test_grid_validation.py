"""Grid files that must stop at once with one line (exit 2): no cells, no systems, a name that is
a path, an alias bomb; and a plugin that takes a name already registered."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import run
from bench.config import ConfigError, Grid, parse_override

ROOT = Path(__file__).resolve().parents[1]
SYSTEMS = "systems:\n  - {refine.name: static}\n"


def _bomb(levels: int = 9, anchor: str = "l") -> str:
    """Billion laughs: ``levels`` lists of nine aliases of the list before."""
    lines = [f"&{anchor}0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"&{anchor}{i} [{', '.join([f'*{anchor}{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "[" + ", ".join(lines) + "]"


def _dry_run(tmp_path: Path, text: str, capsys, name: str = "g") -> tuple[int, str]:
    grid = tmp_path / f"{name}.yaml"
    grid.write_text(text)
    code = run.main(["--grid", str(grid), "--dry-run"])
    return code, capsys.readouterr().err


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n", "name: empty\n"])
def test_grid_without_cells_is_an_error(text, tmp_path, capsys):
    code, err = _dry_run(tmp_path, text, capsys)
    assert code == 2 and "defines no cells" in _one_line(err)


@pytest.mark.parametrize("text", ["systems: []\n", "systems:\n", "base: {seed: 1}\nsystems: []\n"])
def test_empty_systems_is_an_error(text, tmp_path, capsys):
    code, err = _dry_run(tmp_path, text, capsys)
    assert code == 2 and "'systems' is empty" in _one_line(err)


def test_grid_without_systems_key_still_runs_its_base(tmp_path, capsys):
    code, _ = _dry_run(tmp_path, "base: {corpus: {size: smoke}}\n", capsys)
    assert code == 0


@pytest.mark.parametrize("name", ["../../../elsewhere", "/abs/path", "a/b", "a\\\\b", ".hidden", "..", "two words",
                                  "[1, 2]", "{a: 1}", "true"])
def test_grid_name_must_be_a_plain_name(name, tmp_path, capsys):
    code, err = _dry_run(tmp_path, f"name: {name}\n{SYSTEMS}", capsys)
    assert code == 2 and "is not a plain name" in _one_line(err)


@pytest.mark.parametrize("name", ["smoke", "losses_v2", "R1", "run-3.b", "2024"])
def test_plain_grid_names_are_kept(name, tmp_path, capsys):
    code, _ = _dry_run(tmp_path, f"name: {name}\n{SYSTEMS}", capsys)
    assert code == 0
    assert Grid.load(tmp_path / "g.yaml").name == name


def test_file_name_without_name_key_must_be_plain_too(tmp_path, capsys):
    code, err = _dry_run(tmp_path, SYSTEMS, capsys, name="my grid")
    assert code == 2 and "its file name" in _one_line(err) and "'my grid'" in err


def test_every_shipped_grid_loads():
    for path in sorted((ROOT / "ablations").glob("*.yaml")):
        assert Grid.load(path).name


@pytest.mark.parametrize("where", ["base", "name", "systems"])
def test_alias_bomb_is_refused_at_once(where, tmp_path, capsys):
    bomb = _bomb()
    text = {"base": f"base:\n  x: {bomb}\n{SYSTEMS}",
            "name": f"base:\n  eval: {{conditions: {bomb}}}\nname: *l8\n{SYSTEMS}",
            "systems": f"systems:\n  - {{refine.name: static, x: {bomb}}}\n"}[where]
    t0 = time.perf_counter()
    code, err = _dry_run(tmp_path, text, capsys)
    assert code == 2 and "expands to more than" in _one_line(err)
    assert time.perf_counter() - t0 < 10


def test_alias_bomb_in_an_override_is_refused():
    with pytest.raises(ConfigError, match="expands to more than"):
        parse_override(f"eval.conditions={_bomb()}")


def test_recursive_alias_is_refused(tmp_path, capsys):
    code, err = _dry_run(tmp_path, f"base: &r {{x: *r}}\n{SYSTEMS}", capsys)
    assert code == 2 and "refers to itself" in _one_line(err)


def test_modest_aliases_still_load():
    from bench.config import load_yaml

    data = load_yaml("a: &a {x: [1, 2]}\nb: *a\nc: {<<: *a, y: 3}\n", "test")
    assert data == {"a": {"x": [1, 2]}, "b": {"x": [1, 2]}, "c": {"x": [1, 2], "y": 3}}


def test_bound_counts_expanded_size_not_file_size():
    from bench.config import load_yaml

    text = _bomb(levels=4)  # 9**4 scalars from a few hundred characters
    assert load_yaml(text, "t", limit=10**5)
    with pytest.raises(ConfigError):
        load_yaml(text, "t", limit=10**4)


def test_grid_that_is_not_utf8_is_one_line(tmp_path, capsys):
    grid = tmp_path / "g.yaml"
    grid.write_bytes(b"name: caf\xe9\n" + SYSTEMS.encode())
    assert run.main(["--grid", str(grid), "--dry-run"]) == 2
    assert "not UTF-8" in _one_line(capsys.readouterr().err)


# --------------------------------------------------------------------------- plugins
def test_plugin_taking_a_builtin_name_is_one_line(tmp_path):
    """In a fresh process (where the built-in losses are not yet imported when the plugin is)."""
    (tmp_path / "dup_plugin.py").write_text(
        "from bench.registry import register\n\n@register('loss', 'mse')\ndef make(cfg):\n    return None\n")
    env = {k: v for k, v in os.environ.items() if k != "PSE_KD_PLUGINS"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT), env.get("PYTHONPATH", "")])
    res = subprocess.run([sys.executable, "-m", "bench.run", "--grid", str(ROOT / "ablations" / "smoke.yaml"),
                          "--plugins", "dup_plugin", "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert res.returncode == 2, res.stderr
    line = _one_line(res.stderr)
    assert "'dup_plugin'" in line and "'mse'" in line and "already registered by bench.losses" in line


def test_duplicate_registration_is_a_registry_error():
    from bench import registry

    @registry.register("loss", "_dup_probe")
    def a(cfg):  # pragma: no cover - never called
        return None

    with pytest.raises(registry.RegistryError, match="already registered") as err:
        registry.register("loss", "_dup_probe")(lambda cfg: None)
    assert isinstance(err.value, ValueError)


def _systems_of(tmp_path: Path, implicit: str) -> list[str]:
    from bench.grid import with_baselines
    from bench.refine import system_name

    grid = tmp_path / "g.yaml"
    grid.write_text(f"{implicit}systems:\n  - {{refine.name: ema, distill.loss: mse, refine.alpha: 0.1}}\n")
    g = Grid.load(grid)
    return sorted(system_name(c.config) for c in with_baselines(g.cells(), g.implicit))


def test_implicit_picks_which_comparison_cells_a_grid_gets(tmp_path):
    every = _systems_of(tmp_path, "")
    assert {"static", "shrink", "oracle_target", "oracle_clean", "oracle_enroll_clean"} <= set(every)
    lean = _systems_of(tmp_path, "implicit: [baseline, control]\n")
    assert sorted(lean) == sorted(s for s in every if s not in ("oracle_target", "oracle_clean", "oracle_enroll_clean"))
    assert "static" in lean and "shrink" in lean


@pytest.mark.parametrize("value, match", [("[baseline, ceilings]", "'ceilings'; choices: baseline, reference"),
                                           ("[control]", "lacks 'baseline'"), ("baseline", "give a list of roles")])
def test_a_bad_implicit_key_is_one_line_naming_the_choices(value, match, tmp_path, capsys):
    code, err = _dry_run(tmp_path, f"implicit: {value}\n{SYSTEMS}", capsys)
    assert code == 2 and match in _one_line(err)
