"""Attenuation limit (``pse.atten_lim_db``): an inference-time wrapper around any backbone.

``out = (1 - b) * enhanced + b * mixture(t - latency)`` with ``b = 10 ** (-atten_lim_db / 20)``: a
fraction of the mixture, delayed by the backbone's algorithmic latency so that it lines up with
the enhanced output, is added back. For a mask-based backbone (gains <= 1) no time-frequency bin
ends up more than ``atten_lim_db`` below the mixture, which is DeepFilterNet's attenuation limit;
it trades residual noise for less speech distortion. The weights are untouched (the backbone is
trained without it), so the training stage key does not see the setting; evaluation keys do.

The default (26 dB) was chosen on validation mixtures; the measurements that chose it are in
results/lab_notebook.md and the README ("The model zoo").
"""

from __future__ import annotations

from typing import Any

import torch

from bench.pse.base import PSEModel, State

# attributes of the backbone that callers read and the wrapper passes through unchanged
_PASSED = ("emb_dim", "personalized", "hop", "latency_samples", "sample_rate", "preset", "size", "injection")


def mix_weight(atten_lim_db: float) -> float:
    """The mixture's weight ``b`` for an attenuation limit in dB (0 dB or less: off, ``b = 0``)."""
    return 0.0 if atten_lim_db <= 0 else 10.0 ** (-float(atten_lim_db) / 20.0)


class AttenuationLimit(PSEModel):
    """``inner``'s output with ``mix_weight(atten_lim_db)`` of the delayed mixture added back.

    Keeps the :class:`PSEModel` contract of ``inner`` (offline == streaming, causal, same latency):
    the streaming state carries the last ``latency_samples`` input samples.
    """

    def __init__(self, inner: PSEModel, atten_lim_db: float) -> None:
        super().__init__()
        self.inner = inner
        self.atten_lim_db = float(atten_lim_db)
        self.weight = mix_weight(atten_lim_db)
        for name in _PASSED:
            if hasattr(inner, name):
                object.__setattr__(self, name, getattr(inner, name))

    def _delayed(self, x: torch.Tensor, past: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, T]`` delayed by the latency, given the ``past`` latency samples -> ``(x', past')``."""
        lat = int(self.latency_samples)
        if lat == 0:
            return x, past
        xx = torch.cat([past.to(x.dtype), x], dim=1)
        return xx[:, : x.shape[1]], xx[:, -lat:]

    def _mix(self, enhanced: torch.Tensor, delayed: torch.Tensor) -> torch.Tensor:
        return (1.0 - self.weight) * enhanced + self.weight * delayed

    def forward(self, mixture: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        out = self.inner(mixture, emb)
        past = mixture.new_zeros(mixture.shape[0], int(self.latency_samples))
        return self._mix(out, self._delayed(mixture, past)[0])

    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        return {"inner": self.inner.init_state(batch_size, device),
                "past": torch.zeros(batch_size, int(self.latency_samples), device=torch.device(device))}

    def step(self, block: torch.Tensor, emb: torch.Tensor | None, state: State) -> tuple[torch.Tensor, State]:
        out, inner = self.inner.step(block, emb, state["inner"])
        delayed, past = self._delayed(block, state["past"])
        return self._mix(out, delayed), {"inner": inner, "past": past}

    def __repr__(self) -> str:
        return f"AttenuationLimit({self.atten_lim_db:g} dB, {self.inner!r})"


def with_limit(model: Any, atten_lim_db: float) -> Any:
    """``model`` wrapped in :class:`AttenuationLimit`, or ``model`` itself when the limit is off."""
    return AttenuationLimit(model, atten_lim_db) if mix_weight(atten_lim_db) > 0 else model
