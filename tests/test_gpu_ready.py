"""GPU readiness on a CPU: the step-seeded loader, AMP switches, runtime cache keys, pool start
methods, the `paper` preset, bench.compare and scripts/gpu-check.sh."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import runtime
from bench.cache import Cache
from bench.config import ConfigError, ExperimentConfig, Grid, TrainConfig
from bench.data.steps import StepBatches, step_batches, step_rng
from bench.distill import distill_student
from bench.pse import train as pse_train
from tests._kd_helpers import FakeCorpus, FakeTeacher
from tests.pse import test_pdfnet2 as tp

ROOT = Path(__file__).resolve().parents[1]


def _make(n: int, rng: np.random.Generator) -> dict:
    return {"x": rng.standard_normal((2, n)).astype(np.float32), "ids": [f"u{int(rng.integers(100))}"] * 2}


# --------------------------------------------------------------------------- step-seeded loader
@pytest.mark.parametrize("start", [0, 3])
def test_step_batches_same_for_0_and_2_workers(start):
    make = functools.partial(_make, 8)
    a = list(step_batches(make, 7, 1, start, 9, workers=0))
    b = list(step_batches(make, 7, 1, start, 9, workers=2))
    assert len(a) == len(b) == 9 - start
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["x"], y["x"]) and x["ids"] == y["ids"]
    # each batch is a function of (seed, tag, step) alone
    assert torch.equal(a[0]["x"], torch.from_numpy(_make(8, step_rng(7, 1, start))["x"]))
    assert not torch.equal(a[0]["x"], a[1]["x"])


def test_step_batches_split_by_worker(monkeypatch):
    import bench.data.steps as steps

    class Info:
        id, num_workers = 1, 3

    monkeypatch.setattr(steps, "get_worker_info", lambda: Info())
    ds = StepBatches(functools.partial(_make, 4), 0, 0, 2, 12)
    assert [s for s, _ in ds] == [3, 6, 9]  # worker 1 of 3 makes steps 2 + 1, 2 + 4, ...


@pytest.fixture
def fake_world(monkeypatch):
    monkeypatch.setattr(pse_train, "_make_sampler", tp.FakeSampler)
    monkeypatch.setattr(pse_train, "VAL_MIN", 2)
    return tp._fake_corpus(), tp.FakeTeacher()


def _pse_cfg(workers: int) -> ExperimentConfig:
    cfg = tp._train_cfg()
    cfg.pse.train_steps = 4
    cfg.train.loader_workers = workers
    return cfg


def test_pse_training_independent_of_loader_workers_and_resumes(fake_world, tmp_path):
    corpus, teacher = fake_world
    m1, i1 = pse_train.train_pse(_pse_cfg(1), corpus, teacher, Cache(tmp_path / "a"), progress=False)
    m2, i2 = pse_train.train_pse(_pse_cfg(2), corpus, teacher, Cache(tmp_path / "b"), progress=False)
    assert i1["key"] == i2["key"]  # the worker count is not part of the key ...
    assert i1["key"] != pse_train.stage_key(_pse_cfg(0), corpus, teacher)  # ... the per-step stream is
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # interrupted after 2 steps, resumed: the batches an uninterrupted run had
    cache = Cache(tmp_path / "c")
    pse_train.train_pse(_pse_cfg(2), corpus, teacher, cache, progress=False, stop_after=2)
    m3, i3 = pse_train.train_pse(_pse_cfg(2), corpus, teacher, cache, progress=False)
    assert i3["resumed"] and i3["steps"] == 4
    for a, b in zip(m1.state_dict().values(), m3.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def _distill_cfg(workers: int, **kw) -> ExperimentConfig:
    d = {"steps": 4, "batch_size": 6, "val_every": 2, "patience": 5, "window_s": 0.5,
         "inputs": ["clean", "noisy", "enhanced"], **kw}
    return ExperimentConfig.from_dict({"distill": d, "mix": {"noise_types": ["white"]},
                                       "train": {"loader_workers": workers}})


class _Enh:
    identity = "half"

    def __call__(self, x, e):
        return x * 0.5


def test_distill_independent_of_loader_workers(tmp_path):
    corpus = FakeCorpus(n_train=4, n_val=2, n_test=0, n_utts=2, seconds=1.5)
    out = []
    for w in (1, 2):
        s, info = distill_student(_distill_cfg(w), corpus, FakeTeacher(32), Cache(tmp_path / str(w)),
                                  enhancer=_Enh(), progress=False)
        out.append((s.state_dict(), info))
    assert out[0][1]["key"] == out[1][1]["key"] and out[0][1]["steps"] == 4
    for a, b in zip(out[0][0].values(), out[1][0].values(), strict=True):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------- keys, AMP, pools
def test_key_extras_empty_on_default_cpu_path():
    tc = TrainConfig()
    assert runtime.key_extras("cpu", tc) == [] and runtime.key_extras(torch.device("cpu"), None) == []
    assert runtime.key_extras("cpu", TrainConfig(amp=True)) == []  # a no-op on a CPU changes nothing
    assert runtime.key_extras("cpu", TrainConfig(loader_workers=3)) == [{"batches": "per-step"}]
    assert runtime.key_extras("cuda", tc) == [{"device": "cuda"}]
    assert runtime.key_extras("cuda:1", TrainConfig(amp=True, amp_dtype="float16", loader_workers=2)) == [
        {"device": "cuda", "amp": "float16", "batches": "per-step"}]


def test_stage_keys_device_only_off_cpu(fake_world):
    corpus, teacher = fake_world
    cfg = tp._train_cfg()
    cpu = pse_train.stage_key(cfg, corpus, teacher)
    assert pse_train.stage_key(cfg, corpus, teacher, "cpu") == cpu
    assert pse_train.stage_key(cfg, corpus, teacher, "cuda") != cpu
    cfg.train.amp = True  # no effect on a CPU, so the same key there
    assert pse_train.stage_key(cfg, corpus, teacher, "cpu") == cpu
    from bench.distill import distill_key

    c = ExperimentConfig()
    fc, ft = FakeCorpus(n_train=2, n_val=0, n_test=0, n_utts=1, seconds=0.5), FakeTeacher(8)
    assert distill_key(c, fc, ft) == distill_key(c, fc, ft, None, "cpu") != distill_key(c, fc, ft, None, "cuda")


def test_amp_is_a_noop_on_cpu(caplog):
    import contextlib

    tc = TrainConfig(amp=True, amp_dtype="float16")
    runtime._noted.discard("amp")
    with caplog.at_level("INFO", logger="bench"):
        assert runtime.amp_dtype("cpu", tc) is None
    assert "no-op" in caplog.text
    assert isinstance(runtime.autocast("cpu", tc), contextlib.nullcontext)
    assert runtime.grad_scaler("cpu", tc) is None and runtime.grad_scaler("cpu", TrainConfig()) is None


def test_backward_step_with_a_scaler_matches_plain():
    """The GradScaler path (float16 AMP) takes the same step as the plain one when nothing overflows."""
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 2)
    net2 = torch.nn.Linear(4, 2)
    net2.load_state_dict(net.state_dict())
    x = torch.randn(8, 4)
    o1, o2 = torch.optim.Adam(net.parameters(), 1e-2), torch.optim.Adam(net2.parameters(), 1e-2)
    runtime.backward_step(net(x).pow(2).mean(), o1, net.parameters(), None)
    scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
    runtime.backward_step(net2(x).pow(2).mean(), o2, net2.parameters(), scaler)
    for a, b in zip(net.parameters(), net2.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_pdfnet2_trains_under_mixed_precision():
    """A proxy for CUDA autocast: the backbone's forward under bf16 autocast (CPU), loss in float32."""
    model = tp._tiny()
    x, e = tp._wave(2, 3200), tp._emb(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x, e)
    loss = pse_train.pse_loss(y.float(), x, model.latency_samples, [64], 1.0)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_pool_start_method(monkeypatch):
    assert runtime.pool_start_method() in ("fork", "spawn")
    assert runtime.pool_start_method("forkserver") == "forkserver"
    monkeypatch.setattr(runtime, "cuda_live", lambda: True)
    assert runtime.pool_start_method() == "spawn" and runtime.pool_start_method("fork") == "spawn"


def test_quality_pool_uses_spawn_when_cuda_live(monkeypatch):
    """evaluate_utterances starts its PESQ/STOI workers with spawn once CUDA is initialised."""
    from bench.metrics import quality

    seen = []
    real = quality._run_pool

    def spy(items, idx, sr, sels, workers, ctx, results):
        seen.append(ctx.get_start_method())
        return real(items, idx, sr, sels, workers, ctx, results)

    monkeypatch.setattr(quality, "_run_pool", spy)
    monkeypatch.setattr(runtime, "cuda_live", lambda: True)
    x = np.sin(np.arange(16000) / 7.0).astype(np.float32)
    df = quality.evaluate_utterances([(x, x, x), (x * 0.5, x, x)], workers=2, pesq=False, estoi=False)
    assert seen == ["spawn"] and len(df) == 2


def test_backbone_macs_builds_inputs_on_the_model_device(monkeypatch):
    """The backbone MAC count (bench.pse, bench.perf) feeds the model tensors on its own device."""
    from bench.metrics.complexity import backbone_macs_per_second

    model = tp._tiny()
    seen = []
    orig = type(model).forward

    def spy(self, x, e=None):
        seen.append((x.device, None if e is None else e.device))
        return orig(self, x, e)

    monkeypatch.setattr(type(model), "forward", spy)
    assert backbone_macs_per_second(model) > 0
    dev = next(model.parameters()).device
    assert seen and seen[0] == (dev, dev)


def test_job_devices():
    from bench.grid import _job_devices

    assert _job_devices("cpu", 3, 2) == (["cpu"] * 3, 1)


# --------------------------------------------------------------------------- config and presets
def test_train_section_defaults_leave_dicts_and_hashes_unchanged():
    cfg = ExperimentConfig()
    assert "train" not in cfg.to_dict()
    cfg.train.loader_workers = 2
    d = cfg.to_dict()
    assert d["train"]["loader_workers"] == 2 and ExperimentConfig.from_dict(d) == cfg
    with pytest.raises(ConfigError, match="train.amp_dtype"):
        ExperimentConfig.from_dict({"train": {"amp_dtype": "int8"}})
    with pytest.raises(ConfigError, match="train.loader_workers"):
        ExperimentConfig.from_dict({"train": {"loader_workers": -1}})


def test_paper_preset():
    cfg = ExperimentConfig.from_dict({"preset": "paper"})
    assert cfg.pse.size == "paper" and cfg.pse.source == "train" and cfg.train.amp
    assert cfg.pse.train_steps > ExperimentConfig().pse.train_steps
    assert ExperimentConfig.from_dict({"preset": "cpu"}) == ExperimentConfig()
    # the grid's own values and --set win over the preset
    cells = Grid.load(ROOT / "ablations/smoke.yaml", overrides=["preset=paper", "distill.steps=7"]).cells()
    c = cells[0].config
    assert c.pse.size == "tiny" and c.distill.steps == 7 and c.student.channels == 104
    with pytest.raises(ConfigError, match="preset='huge'"):
        ExperimentConfig.from_dict({"preset": "huge"})
    from bench import registry

    student = registry.get("student", c.student.name)(c.student, 256)  # under the paper's 150 k cap
    assert sum(p.numel() for p in student.parameters()) <= c.student.max_params


# --------------------------------------------------------------------------- compare, gpu-check
def _board(shift: float = 0.0, nan: bool = False):
    import pandas as pd

    rows = [{"cell_id": "c1", "condition": "clean", "si_sdr_mean": 3.0 + shift, "pesq_mean": 1.1,
             "rtf": 0.1 + 5 * shift, "batch_rtf": 0.1 + shift, "block_ms_p95": 30 + 99 * shift,
             "p_d_si_sdr": 0.5 + shift, "pse_params": 1000},
            {"cell_id": "c1", "condition": "all", "si_sdr_mean": 2.0, "pesq_mean": float("nan") if nan else 1.2,
             "rtf": 0.1, "batch_rtf": 0.1, "block_ms_p95": 30, "p_d_si_sdr": 0.25, "pse_params": 1000}]
    return pd.DataFrame(rows)


def test_compare(tmp_path, capsys):
    from bench import compare

    a, b, c, d = (tmp_path / f"{n}.csv" for n in "abcd")
    _board().to_csv(a, index=False)
    _board(0.2).to_csv(b, index=False)
    _board(0.7).to_csv(c, index=False)
    _board(nan=True).to_csv(d, index=False)
    assert compare.main([str(a), str(b)]) == 0  # timings and p-values are not compared
    out = capsys.readouterr().out
    assert "si_sdr_mean" in out and "rtf" not in out.split("\n", 1)[1] and "0.2" in out
    assert compare.main([str(a), str(c)]) == 1 and "OVER" in capsys.readouterr().out
    assert compare.main([str(a), str(c), "--tol-db", "1"]) == 0
    assert compare.main([str(a), str(d)]) == 1  # NaN in one only
    _board().iloc[:1].to_csv(d, index=False)
    assert compare.main([str(a), str(d)]) == 2 and "other rows" in capsys.readouterr().err


def test_gpu_check_without_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: scripts/gpu-check.sh would run the grids")
    r = subprocess.run(["bash", str(ROOT / "scripts/gpu-check.sh")], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path / "gc"),
                            "PY": str(ROOT / ".venv/bin/python")}, timeout=120)
    assert r.returncode == 3 and "no GPU" in r.stderr and not (tmp_path / "gc").exists()
