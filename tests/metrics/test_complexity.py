"""MAC counting (fvcore + recurrent handles) against hand counts; parameter split; RTF helper."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.metrics.complexity import (
    count_macs,
    count_params,
    mac_report,
    macs_per_second,
    macs_per_second_report,
)

torch.set_num_threads(1)


def _rnn_hand(gates: int, t: int, b: int, i: int, h: int, layers: int = 1, dirs: int = 1) -> int:
    """gates * T * (I*H + H*H) per layer and direction (biases not counted), times batch."""
    total = 0
    for layer in range(layers):
        inp = i if layer == 0 else h * dirs
        total += dirs * gates * t * (inp * h + h * h)
    return b * total


@pytest.mark.parametrize(
    "layers,bidirectional,batch_first",
    [(1, False, False), (2, False, True), (1, True, False), (3, True, True)],
)
def test_gru_matches_hand_count(layers, bidirectional, batch_first):
    t, b, i, h = 7, 2, 5, 6
    gru = nn.GRU(i, h, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first)
    x = torch.randn(b, t, i) if batch_first else torch.randn(t, b, i)
    rep = mac_report(gru, (x,))
    assert rep.macs == _rnn_hand(3, t, b, i, h, layers, 2 if bidirectional else 1)
    assert rep.by_operator == {"gru": rep.macs}
    assert "aten::gru" not in rep.unsupported


@pytest.mark.parametrize(
    "layers,bidirectional,batch_first",
    [(1, False, False), (2, False, False), (1, True, True), (2, True, True)],
)
def test_lstm_matches_hand_count(layers, bidirectional, batch_first):
    t, b, i, h = 5, 3, 4, 8
    lstm = nn.LSTM(i, h, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first)
    x = torch.randn(b, t, i) if batch_first else torch.randn(t, b, i)
    assert count_macs(lstm, (x,)) == _rnn_hand(4, t, b, i, h, layers, 2 if bidirectional else 1)


def test_lstm_with_projection_and_no_bias():
    t, b, i, h, p = 6, 1, 4, 8, 3
    lstm = nn.LSTM(i, h, proj_size=p, bias=False)
    # W_ih 4H x I, W_hh 4H x P, projection P x H, per step
    assert count_macs(lstm, (torch.randn(t, b, i),)) == t * (4 * h * i + 4 * h * p + p * h)


def test_vanilla_rnn_and_cells():
    t, b, i, h = 9, 2, 3, 4
    assert count_macs(nn.RNN(i, h), (torch.randn(t, b, i),)) == _rnn_hand(1, t, b, i, h)
    assert count_macs(nn.RNN(i, h, nonlinearity="relu"), (torch.randn(t, b, i),)) == _rnn_hand(
        1, t, b, i, h
    )
    assert count_macs(nn.GRUCell(i, h), (torch.randn(b, i),)) == _rnn_hand(3, 1, b, i, h)
    assert count_macs(nn.LSTMCell(i, h), (torch.randn(b, i),)) == _rnn_hand(4, 1, b, i, h)


def test_packed_sequence_counts_real_steps():
    gru = nn.GRU(3, 4)

    class Packed(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = gru

        def forward(self, x):
            packed = nn.utils.rnn.pack_padded_sequence(x, [7, 4])
            return self.gru(packed)[0].data

    assert count_macs(Packed(), (torch.randn(7, 2, 3),)) == 3 * (7 + 4) * (3 * 4 + 4 * 4)


def test_linear_and_conv_match_hand_counts():
    assert count_macs(nn.Linear(10, 4), (torch.randn(3, 10),)) == 3 * 10 * 4  # bias not counted
    assert count_macs(nn.Linear(10, 4), (torch.randn(2, 5, 10),)) == 2 * 5 * 10 * 4
    conv = nn.Conv1d(4, 6, kernel_size=3, stride=2, padding=1)
    x = torch.randn(2, 4, 50)
    l_out = conv(x).shape[-1]
    assert count_macs(conv, (x,)) == 2 * 6 * 4 * 3 * l_out
    dw = nn.Conv1d(8, 8, kernel_size=5, groups=8)
    x = torch.randn(1, 8, 40)
    assert count_macs(dw, (x,)) == 8 * 1 * 5 * 36


class _FrameModel(nn.Module):
    """Conv front-end (hop 160) + GRU + Linear + sigmoid: a streaming-SE-shaped network."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 16, kernel_size=320, stride=160)
        self.gru = nn.GRU(16, 12, batch_first=True)
        self.out = nn.Linear(12, 160)

    def forward(self, wav):
        z = self.conv(wav.unsqueeze(1)).transpose(1, 2)
        return torch.sigmoid(self.out(self.gru(z)[0]))


def test_macs_per_second_and_unsupported_list():
    model = _FrameModel()
    frames = (16000 - 320) // 160 + 1  # 99
    hand = frames * 16 * 320 + 3 * frames * (16 * 12 + 12 * 12) + frames * 12 * 160
    assert macs_per_second(model, lambda n: (torch.zeros(1, n),)) == hand
    rep = mac_report(model, (torch.zeros(1, 16000),))
    assert set(rep.by_operator) == {"conv", "gru", "linear"}
    assert "aten::sigmoid" in rep.unsupported
    assert macs_per_second(model, lambda n: (torch.zeros(2, n),), batch_size=2) == hand


def test_count_params_split():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3)  # 15 learnable
            self.bn = nn.BatchNorm1d(3)  # 6 learnable, buffers 3 + 3 + 1
            self.frozen = nn.Parameter(torch.zeros(5), requires_grad=False)
            self.register_buffer("window", torch.ones(7))
            self.tied = self.lin  # shared module counted once

    assert count_params(M()) == {"learnable": 21, "fixed": 5, "buffers": 14}


def test_report_dict_access():
    rep = macs_per_second_report(nn.Linear(160, 4), lambda n: (torch.zeros(1, n // 160, 160),))
    assert rep["macs"] == rep["macs_per_s"] == 100 * 160 * 4
    assert rep.as_dict()["unsupported"] == {} and rep["by_operator"] == {"linear": 64000}
    with pytest.raises(KeyError):
        rep["nope"]


