"""Complexity metrics: parameters and MACs per second of audio (the real-time factor and peak
memory are measured by the one timer, :func:`bench.runtime.measure`).

Conventions (one everywhere in the suite):

* **MACs, not FLOPs.** fvcore's ``FlopCountAnalysis`` counts one fused multiply-add as one
  "flop" (a ``Linear(I, O)`` on ``N`` rows gives ``N*I*O``; a ``Conv1d`` gives
  ``N*C_out*(C_in/groups)*K*L_out``), i.e. its numbers are MACs; we report them as MACs.
  Biases, activations, normalisation statistics and element-wise ops are not counted (fvcore's
  defaults; element-wise ops show up in ``unsupported`` instead).
* **Recurrent layers are counted.** fvcore returns 0 for ``aten::gru`` / ``aten::lstm`` /
  ``aten::rnn_tanh`` / ``aten::rnn_relu`` (and the ``*_cell`` ops when they are not decomposed);
  this module registers handles that count, per layer and direction, every weight matrix once per
  time step and batch item: GRU ``3*T*(I*H + H*H)``, LSTM ``4*T*(I*H + H*H)``, vanilla RNN
  ``T*(I*H + H*H)`` (DATA.md's hand count). Layers after the first of a bidirectional stack see
  ``I = 2*H``; an LSTM with ``proj_size=P`` has ``W_hh`` of ``4H x P`` plus the projection
  ``P x H`` per step. Biases and the gates' element-wise products are not counted, consistently
  with Linear. Packed sequences count the real (unpadded) steps.
* **Per second of audio.** :func:`macs_per_second` counts MACs on exactly one second of audio
  (``sr`` samples, batch size 1), the DeepFilterNet convention.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "MacReport",
    "count_macs",
    "count_params",
    "mac_report",
    "macs_per_second",
    "macs_per_second_report",
    "rnn_handles",
]


# --------------------------------------------------------------------------- parameters
def count_params(module: nn.Module) -> dict[str, int]:
    """Parameter counts of ``module`` (shared tensors counted once).

    Returns ``{"learnable": requires_grad params, "fixed": params with requires_grad=False,
    "buffers": registered buffers (BatchNorm statistics, fixed filterbanks, ...)}``.
    """
    learnable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    fixed = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    buffers = sum(b.numel() for b in module.buffers())
    return {"learnable": int(learnable), "fixed": int(fixed), "buffers": int(buffers)}


# --------------------------------------------------------------------------- RNN op handles
def _shape(val: Any) -> list[int] | None:
    return list(val.type().sizes()) if val.isCompleteTensor() else None


def _list_shapes(val: Any) -> list[list[int] | None] | None:
    """Shapes of the tensors of a traced ``Tensor[]`` value (``prim::ListConstruct``)."""
    if not isinstance(val.type(), torch._C.ListType):
        return None
    node = val.node()
    if node.kind() != "prim::ListConstruct":
        return None
    return [_shape(v) for v in node.inputs()]


def _weight_macs(shapes: list[list[int] | None]) -> int:
    """Sum of ``rows*cols`` over the 2-D weight matrices (biases are 1-D and skipped)."""
    return sum(s[0] * s[1] for s in shapes if s is not None and len(s) == 2)


def _rnn_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """``aten::{gru,lstm,rnn_tanh,rnn_relu}`` (``.input`` and packed ``.data`` overloads)."""
    x_shape = _shape(inputs[0])
    params = None
    for v in inputs[1:]:
        shapes = _list_shapes(v)
        # hx lists (LSTM) hold 3-D tensors; the params list holds 2-D weights and 1-D biases.
        if shapes and any(s is not None and len(s) == 2 for s in shapes):
            params = shapes
            break
    if x_shape is None or params is None:
        return 0
    if len(x_shape) == 3:  # [T, B, I] (or [B, T, I] with batch_first): T*B steps either way
        steps = x_shape[0] * x_shape[1]
    elif len(x_shape) == 2:  # packed data [sum of lengths, I]
        steps = x_shape[0]
    else:
        return 0
    return steps * _weight_macs(params)


def _cell_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """``aten::{gru,lstm,rnn_tanh,rnn_relu}_cell(input, hx, w_ih, w_hh, b_ih, b_hh)``."""
    x_shape = _shape(inputs[0])
    if x_shape is None:
        return 0
    rows = x_shape[0] if len(x_shape) == 2 else 1
    shapes = [_shape(v) for v in inputs[1:] if v.isCompleteTensor()]
    return rows * _weight_macs(shapes)


def rnn_handles() -> dict[str, Callable[[list[Any], list[Any]], int]]:
    """fvcore op handles that count recurrent layers (see the module docstring)."""
    out: dict[str, Callable[[list[Any], list[Any]], int]] = {}
    for op in ("gru", "lstm", "rnn_tanh", "rnn_relu"):
        out[f"aten::{op}"] = _rnn_handle
        out[f"aten::{op}_cell"] = _cell_handle
    return out


# --------------------------------------------------------------------------- MACs
@dataclass
class MacReport:
    """MAC count of one forward call.

    ``macs``: total; ``by_operator``: fvcore's per-operator split (``gru``, ``lstm``, ``linear``,
    ``conv`` ...); ``unsupported``: ops fvcore skipped (counted 0) with their call counts, so reports
    can show what is missing (mostly element-wise ops); ``per_second``: MACs per second of audio
    when produced by :func:`macs_per_second_report`, else NaN.
    """

    macs: int
    by_operator: dict[str, int] = field(default_factory=dict)
    unsupported: dict[str, int] = field(default_factory=dict)
    per_second: float = float("nan")

    _KEYS = {"macs": "macs", "by_operator": "by_operator", "unsupported": "unsupported",
             "per_second": "per_second", "macs_per_s": "per_second"}  # fmt: skip

    def __getitem__(self, key: str) -> Any:
        """Dict-style access: ``report["macs"]``, ``["macs_per_s"]``, ``["unsupported"]`` ..."""
        if key not in self._KEYS:
            raise KeyError(key)
        return getattr(self, self._KEYS[key])

    def as_dict(self) -> dict[str, Any]:
        """``{"macs", "macs_per_s", "by_operator", "unsupported"}`` (JSON-friendly)."""
        return {
            "macs": self.macs,
            "macs_per_s": self.per_second,
            "by_operator": dict(self.by_operator),
            "unsupported": dict(self.unsupported),
        }


class _NoGradWrapper(nn.Module):
    def __init__(self, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.fn = fn
        owner = getattr(fn, "__self__", None)
        if isinstance(owner, nn.Module):  # a bound method: register its module so its
            self.owner = owner  # parameters are traced as parameters, not as constants

    def forward(self, *args: Any) -> Any:
        return self.fn(*args)


def mac_report(module: nn.Module | Callable[..., Any], inputs: tuple) -> MacReport:
    """Trace ``module(*inputs)`` with fvcore (+ RNN handles) and return a :class:`MacReport`.

    ``module`` may be any callable (e.g. ``teacher.embed``); it is wrapped in an ``nn.Module``.
    fvcore's warnings (unsupported ops, uncalled modules, tracer warnings) are silenced; the
    unsupported ops are returned in the report instead. The module's train/eval mode is kept.
    """
    with warnings.catch_warnings():  # fvcore's import calls the deprecated torch.jit.script
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis

    if not isinstance(inputs, tuple):
        inputs = (inputs,)
    mod = module if isinstance(module, nn.Module) else _NoGradWrapper(module)
    fv_logger = logging.getLogger("fvcore")
    old_level = fv_logger.level
    fv_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            analysis = FlopCountAnalysis(mod, inputs).set_op_handle(**rnn_handles())
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            analysis.tracer_warnings("none")
            total = int(analysis.total())
            by_op = {k: int(v) for k, v in analysis.by_operator().items()}
            unsupported = dict(Counter(analysis.unsupported_ops()))
    finally:
        fv_logger.setLevel(old_level)
    return MacReport(macs=total, by_operator=by_op, unsupported=unsupported)


def count_macs(module: nn.Module | Callable[..., Any], inputs: tuple) -> int:
    """MACs of one call ``module(*inputs)`` (all batch items together); see :func:`mac_report`."""
    return mac_report(module, inputs).macs


def macs_per_second_report(
    module: nn.Module | Callable[..., Any],
    make_inputs: Callable[[int], tuple],
    sr: int = 16_000,
    batch_size: int = 1,
) -> MacReport:
    """:class:`MacReport` of ``module(*make_inputs(sr))`` with ``per_second`` filled in.

    ``make_inputs(n_samples)`` must build the inputs for exactly ``n_samples`` samples of audio;
    it is called with ``sr`` (one second). ``batch_size`` is the batch those inputs hold (1 by
    convention); the count is divided by it.
    """
    report = mac_report(module, make_inputs(int(sr)))
    report.per_second = report.macs / float(batch_size)
    return report


def macs_per_second(
    module: nn.Module | Callable[..., Any],
    make_inputs: Callable[[int], tuple],
    sr: int = 16_000,
    batch_size: int = 1,
) -> float:
    """MACs per second of audio: counted on exactly 1 s (``sr`` samples), batch size 1."""
    return macs_per_second_report(module, make_inputs, sr, batch_size).per_second


def backbone_macs_report(model: nn.Module, sr: int = 16_000) -> MacReport:
    """:class:`MacReport` (per second of audio) of a PSE backbone ``model(mixture [1, T], emb [1, D]
    | None)``, with a zero embedding of ``model.emb_dim`` when it is personalized; inputs on the
    model's own device."""
    dev = next(model.parameters()).device
    emb = torch.zeros(1, int(model.emb_dim), device=dev) if getattr(model, "personalized", False) else None
    return macs_per_second_report(model, lambda n: (torch.zeros(1, n, device=dev), emb), sr)


def backbone_macs_per_second(model: nn.Module, sr: int = 16_000) -> float:
    """MACs per second of audio of a PSE backbone (:func:`backbone_macs_report`)."""
    return backbone_macs_report(model, sr).per_second


# --------------------------------------------------------------------------- time and memory
