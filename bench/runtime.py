"""How the training stages run on the device at hand: cache-key parts, AMP, worker start methods.

The ``train`` section of the config (:class:`bench.config.TrainConfig`) holds the switches:
``loader_workers`` (mixtures built in DataLoader worker processes, :mod:`bench.data.steps`),
``amp`` and ``amp_dtype`` (autocast on CUDA). With the defaults on a CPU nothing here changes what
a stage computes, and :func:`key_extras` adds nothing to a cache key, so every key made before
these options existed stays valid.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is used: metric workers import this module cheaply
    import torch

log = logging.getLogger("bench")

AMP_DTYPES = ("bfloat16", "float16")
_noted: set[str] = set()


def device_type(device: Any) -> str:
    """``"cpu"``, ``"cuda"``, ... of a device string or :class:`torch.device`."""
    return str(device).split(":", 1)[0]


def key_extras(device: Any, train_cfg: Any) -> list[dict[str, str]]:
    """Cache-key parts for what the runtime changes in a trained stage's result.

    * the device, when it is not the CPU: the same config trained on a GPU gives other weights
      (other kernels, other reduction orders), so it must not be served a CPU artifact;
    * the autocast dtype, when AMP is on and effective (CUDA only; on a CPU it is a no-op);
    * ``batches: per-step`` when mixtures come from the step-seeded loader
      (``train.loader_workers > 0``): another random stream than the in-process sampler, though
      the same for any number of workers, so the count itself is not part of the key.

    Empty for the default CPU path, so keys computed before these options existed stay valid.
    """
    extra: dict[str, str] = {}
    dev = device_type(device)
    if dev != "cpu":
        extra["device"] = dev
    if train_cfg is not None and amp_dtype(device, train_cfg) is not None:
        extra["amp"] = str(train_cfg.amp_dtype)
    if train_cfg is not None and int(train_cfg.loader_workers) > 0:
        extra["batches"] = "per-step"
    return [extra] if extra else []


def amp_dtype(device: Any, train_cfg: Any) -> torch.dtype | None:
    """The autocast dtype ``train.amp`` asks for on ``device``; None when AMP is off or the device
    is not CUDA (autocast is a no-op on a CPU: the training runs in float32, with a logged note)."""
    if train_cfg is None or not bool(train_cfg.amp):
        return None
    if device_type(device) != "cuda":
        _note("amp", f"train.amp=true is a no-op on {device}: autocast runs on CUDA only; training in float32")
        return None
    import torch

    return getattr(torch, str(train_cfg.amp_dtype))


def autocast(device: Any, train_cfg: Any) -> contextlib.AbstractContextManager[Any]:
    """The forward pass's autocast context: ``torch.autocast("cuda", dtype)`` when AMP is on and
    effective, else a no-op context (the default path runs exactly as without it)."""
    dtype = amp_dtype(device, train_cfg)
    if dtype is None:
        return contextlib.nullcontext()
    import torch

    return torch.autocast("cuda", dtype=dtype)


def grad_scaler(device: Any, train_cfg: Any) -> torch.amp.GradScaler | None:
    """A GradScaler for float16 autocast (bfloat16 has float32's range and needs none); else None."""
    import torch

    if amp_dtype(device, train_cfg) is not torch.float16:
        return None
    return torch.amp.GradScaler("cuda")


def backward_step(loss: torch.Tensor, opt: torch.optim.Optimizer, params: Any, scaler: Any,
                  clip: float = 5.0) -> None:
    """``backward``, gradient clipping at ``clip`` and the optimiser step; through ``scaler``
    (float16 AMP) when one is given, else exactly the plain float32 sequence."""
    import torch

    params = list(params)
    if scaler is None:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        return
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(params, clip)
    scaler.step(opt)
    scaler.update()


def cuda_live() -> bool:
    """Whether this process has initialised CUDA (a forked child would inherit a broken context);
    never without torch imported."""
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized())


def pool_start_method(default: str | None = None) -> str:
    """Start method for worker pools: ``spawn`` once CUDA is initialised in this process (a child
    forked from a process with a CUDA context cannot use it, and forking it is unsafe), else
    ``default`` or ``fork`` where the platform has it (cheap: the workers inherit the imports)."""
    if cuda_live():
        return "spawn"
    if default:
        return default
    return "fork" if "fork" in mp.get_all_start_methods() else "spawn"


def _note(tag: str, msg: str) -> None:
    """Log ``msg`` once per process."""
    if tag not in _noted:
        _noted.add(tag)
        log.info(msg)
