"""One code path for CPU and CUDA: device choice, AMP, seeding, threads, timing and memory."""

from __future__ import annotations

import contextlib
import os
import platform
import random
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np


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


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def set_threads(n: int | None = None) -> int:
    """Set torch intra-op threads (per worker process); default: ``$PSE_KD_THREADS`` or all cores."""
    import torch

    if n is None:
        n = int(os.environ.get("PSE_KD_THREADS", "0")) or (os.cpu_count() or 1)
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


def autocast(device: str, enabled: bool = True):
    """bf16 autocast on CUDA (when ``enabled``), a no-op context on CPU."""
    import torch

    if device == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


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
