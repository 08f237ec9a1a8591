"""The device at hand: its choice and description, threads, timing and peak memory, and how the
training stages run on it (cache-key parts, AMP, worker start methods).

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
import os
import platform
import resource
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
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


# --------------------------------------------------------------------------- the device at hand
def pick_device(requested: str = "auto") -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``. ``cuda`` without a GPU is an error."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was requested but torch sees no CUDA device; use device=auto or cpu")
    if requested not in ("cpu", "cuda"):
        raise ValueError(f"device={requested!r} is not allowed; choices: auto, cpu, cuda")
    return requested


def device_name(device: str) -> str:
    """Human-readable device description for provenance."""
    import torch

    if device == "cuda":
        return f"cuda:{torch.cuda.get_device_name(0)}"
    return f"cpu:{platform.processor() or platform.machine()} x{os.cpu_count()} threads={torch.get_num_threads()}"


def set_threads(n: int | None = None) -> int:
    """Set torch intra-op threads (per worker process); default: ``$PSE_KD_THREADS`` or all cores."""
    import torch

    if n is None:
        n = int(os.environ.get("PSE_KD_THREADS", "0")) or (os.cpu_count() or 1)
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


@dataclass
class Timing:
    """Wall time, real-time factor and peak memory of a measured block."""

    wall_s: float = 0.0
    audio_s: float = 0.0
    peak_mem_mb: float = 0.0
    mem_kind: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def rtf(self) -> float:
        return self.wall_s / self.audio_s if self.audio_s > 0 else float("nan")


def _rss_peak_mb() -> float:
    """Peak resident memory (MB) since the last :func:`_reset_rss_peak` (Linux: ``VmHWM``), else
    the process' lifetime high-water mark (``ru_maxrss``)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _reset_rss_peak() -> bool:
    """Reset the peak-RSS counter to the current RSS (Linux ``clear_refs`` 5); False where the
    kernel does not allow it (the peak is then the process' lifetime high-water mark)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


@contextlib.contextmanager
def measure(device: str, audio_s: float = 0.0) -> Iterator[Timing]:
    """Time a block; peak memory is CUDA max allocated (on CUDA) or the peak RSS reached inside the
    block (on Linux CPUs; elsewhere the process' lifetime peak, ``mem_kind`` says which)."""
    import torch

    t = Timing(audio_s=audio_s)
    reset = False
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        reset = _reset_rss_peak()
    start = time.perf_counter()
    try:
        yield t
    finally:
        if device == "cuda":
            torch.cuda.synchronize()
            t.peak_mem_mb = torch.cuda.max_memory_allocated() / 2**20
            t.mem_kind = "cuda_max_allocated"
        else:
            t.peak_mem_mb = _rss_peak_mb()
            t.mem_kind = "cpu_peak_rss_block" if reset else "cpu_peak_rss_process"
        t.wall_s = time.perf_counter() - start
