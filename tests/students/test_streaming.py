"""The streaming student (``refine.student_mode: streaming``): incremental == one-shot, one pass
of MACs, refiner wiring, validation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.config import ConfigError, ExperimentConfig, RefineConfig, validate
from bench.metrics.complexity import macs_per_second
from bench.refine import EMARefiner, enhance_streaming
from bench.students.streaming import StreamingTiny, streaming_encoder, supports_streaming
from bench.students.tiny import TinyStudent

torch.set_num_threads(1)


def _student(dim: int = 8, seed: int = 0) -> TinyStudent:
    torch.manual_seed(seed)
    s = TinyStudent(dim, n_mels=16, channels=12, hidden=10).eval()
    for m in s.modules():  # non-trivial BatchNorm statistics, so eval-mode BN is really exercised
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return s


def _audio(b: int, t: int, seed: int = 1) -> torch.Tensor:
    return 0.1 * torch.randn(b, t, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("splits", [[8000] * 4, [100, 7999, 37, 160, 12000, 11704], [32000]])
@torch.no_grad()
def test_incremental_equals_one_shot_after_every_block(splits):
    enc = StreamingTiny(_student())
    x = _audio(2, sum(splits))
    state = enc.init_state(2)
    pos = 0
    for n in splits:
        emb, state = enc.step(x[:, pos : pos + n], state)
        pos += n
        torch.testing.assert_close(emb, enc.causal_embed(x[:, :pos]), rtol=1e-4, atol=1e-5)
    assert state["n_frames"] == sum(splits) // enc.hop  # every 10 ms frame consumed exactly once


@torch.no_grad()
def test_one_shot_pools_every_frame_so_far():
    """The streaming embedding is the attentive pool over all frames, not the last window's."""
    enc = StreamingTiny(_student())
    x = _audio(1, 24000)
    early = enc.causal_embed(x[:, :8000])
    changed = x.clone()
    changed[:, :8000] = _audio(1, 8000, seed=7)  # other audio in the first block only
    assert not torch.allclose(enc.causal_embed(changed), enc.causal_embed(x))
    assert torch.allclose(enc.causal_embed(x[:, :8000]), early)


def test_streaming_costs_one_pass_and_window_four():
    student = _student(dim=256)
    one_pass = macs_per_second(student, lambda n: (torch.zeros(1, n),))
    block = 8000
    stream = EMARefiner(RefineConfig(name="ema", alpha=0.1, student_mode="streaming"), student)
    window = EMARefiner(RefineConfig(name="ema", alpha=0.1, context_s=1.5), student)
    s_macs, w_macs = stream.count_extra_macs(block), window.count_extra_macs(block)
    # one pass of the same layers, except that the streaming frontend skips the zeros of the
    # dense mel matrix (100 frames per second)
    enc = StreamingTiny(student)
    n_mels, n_bins = student.frontend.fb.shape
    mel_saved = 100 * n_mels * (n_bins - enc.band_w.shape[1])
    assert s_macs == pytest.approx(one_pass - mel_saved, rel=0.02)
    assert s_macs < one_pass
    assert w_macs == pytest.approx(4 * one_pass, rel=0.05)
    assert stream.context_s == 0.0


def test_banded_mel_equals_the_dense_filterbank():
    enc = StreamingTiny(TinyStudent(8))
    fb = enc.student.frontend.fb
    power = torch.rand(2, fb.shape[1], 7)
    m, w = enc.band_w.shape
    bins = power[:, enc.band_idx.reshape(-1), :].reshape(2, m, w, 7)
    torch.testing.assert_close(torch.einsum("mw,bmwf->bmf", enc.band_w, bins), fb @ power)
    assert w < fb.shape[1] // 4  # most of the dense matrix is zeros


@torch.no_grad()
def test_refiner_feeds_each_block_once_and_matches_one_shot():
    """With alpha = 1 each update sets e to the student's embedding of the enhanced output so
    far: the trajectory equals the one-shot causal embedding after every block."""
    from tests.refine.test_refiners import FakeCausalPSE

    student = _student(dim=3)
    cfg = RefineConfig(name="ema", alpha=1.0, student_mode="streaming", context_s=1.5)
    r = EMARefiner(cfg, student)
    mix, e0 = _audio(2, 16000 * 2 + 40), F.normalize(torch.ones(2, 3), dim=-1)
    res = enhance_streaming(FakeCausalPSE(), mix, e0, r, block_s=0.5)
    enc = StreamingTiny(student)
    for k in range(res.n_updates):
        stop = (k + 1) * res.block_len
        want = F.normalize(enc.causal_embed(res.enhanced[:, :stop]), dim=-1)
        torch.testing.assert_close(res.embeddings[k + 1], want, rtol=1e-4, atol=1e-5)
    # a second stream starts from a fresh state (reset), not from the first one's
    res2 = enhance_streaming(FakeCausalPSE(), mix, e0, r, block_s=0.5)
    torch.testing.assert_close(res2.embeddings, res.embeddings)


@torch.no_grad()
def test_gate_skipped_blocks_are_still_consumed():
    from tests.refine.test_refiners import FakeCausalPSE

    student = _student(dim=3)
    cfg = RefineConfig(name="ema", alpha=1.0, student_mode="streaming", gate="energy", gate_threshold=-40.0)
    r = EMARefiner(cfg, student)
    mix = _audio(1, 16000 * 2)
    mix[:, 8000:16000] = 0.0  # the second block is silent: skipped, but the student sees it
    res = enhance_streaming(FakeCausalPSE(), mix, F.normalize(torch.ones(1, 3), dim=-1), r, block_s=0.5)
    assert res.skipped[:, 0].tolist() == [False, True, False]
    torch.testing.assert_close(res.embeddings[2], res.embeddings[1])  # skipped: e kept
    want = F.normalize(StreamingTiny(student).causal_embed(res.enhanced[:, : 3 * 8000]), dim=-1)
    torch.testing.assert_close(res.embeddings[3], want, rtol=1e-4, atol=1e-5)


def test_window_mode_is_the_default_and_unchanged():
    assert RefineConfig().student_mode == "window"
    student = _student(dim=3)
    r = EMARefiner(RefineConfig(name="ema", alpha=0.5, context_s=0.5), student)
    assert r.stream is None and not r.stateful and r.context_s == 0.5
    w = _audio(2, 16000)
    with torch.no_grad():
        torch.testing.assert_close(r.encode(w), student(w))


def test_validation_names_the_key_the_value_and_the_choices():
    cfg = ExperimentConfig()
    cfg.refine.student_mode = "online"
    with pytest.raises(ConfigError, match=r"refine\.student_mode='online'.*window, streaming"):
        validate(cfg)
    with pytest.raises(ValueError, match="student_mode='online'; choices: window, streaming"):
        EMARefiner(RefineConfig(name="ema", alpha=0.1, student_mode="online"), _student())


def test_a_student_without_streaming_inference_is_named():
    class Plain(nn.Module):
        def forward(self, wav: torch.Tensor) -> torch.Tensor:
            return wav[:, :3]

    assert not supports_streaming(Plain()) and supports_streaming(_student())
    with pytest.raises(ValueError, match="Plain has none"):
        EMARefiner(RefineConfig(name="ema", alpha=0.1, student_mode="streaming"), Plain())


@torch.no_grad()
def test_plugin_students_stream_through_their_own_api():
    class Running(nn.Module):
        """Running mean of the samples: its own init_stream / stream_step."""

        def init_stream(self, batch, device):
            return {"sum": torch.zeros(batch, 1, device=device), "n": 0}

        def stream_step(self, block, st):
            st = {"sum": st["sum"] + block.sum(-1, keepdim=True), "n": st["n"] + block.shape[-1]}
            return torch.cat([st["sum"] / st["n"], torch.ones_like(st["sum"])], dim=-1), st

        def forward(self, wav):
            return torch.cat([wav.mean(-1, keepdim=True), torch.ones(wav.shape[0], 1)], dim=-1)

    enc = streaming_encoder(Running())
    x = _audio(2, 1000)
    st = enc.init_state(2, "cpu")
    _, st = enc.step(x[:, :300], st)
    emb, st = enc.step(x[:, 300:], st)
    torch.testing.assert_close(emb, Running()(x))
