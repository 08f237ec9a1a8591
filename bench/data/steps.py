"""Training batches built off the training loop, in DataLoader worker processes.

The backbone and the students build their mixtures in numpy; in the training process that
starves a GPU. With ``train.loader_workers > 0`` each batch is made by a ``make(rng)`` function
in a worker, from a generator seeded by ``(seed, tag, step)`` alone: batch ``s`` is the same
whichever worker makes it and however many there are (worker ``w`` of ``W`` makes steps
``start + w``, ``start + w + W``, ...; the DataLoader hands them back round-robin, i.e. in step
order, and every batch carries its step, which the consumer checks). A resumed run starts at its
step and gets the batches an uninterrupted one would have.

Workers are forked where the platform allows (they inherit the corpus in memory and never touch
CUDA: they run numpy only; PyTorch's own default on Linux, safe with a live CUDA context in the
parent for exactly that reason), else spawned (``make`` and what it holds must then pickle).
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

# generator tags: a batch stream is (seed, tag, step); stages use different tags
PSE_TAG = 0x5053  # "PS"
STUDENT_TAG = 0x5354  # "ST"


def step_rng(seed: int, tag: int, step: int) -> np.random.Generator:
    """The generator of one step's batch: a function of ``(seed, tag, step)`` only."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(tag), int(step)])


class StepBatches(IterableDataset):
    """``(step, make(step_rng(seed, tag, step)))`` for ``step`` in ``[start, stop)``, split across
    DataLoader workers by step (see the module docstring)."""

    def __init__(self, make: Callable[[np.random.Generator], Any], seed: int, tag: int, start: int,
                 stop: int) -> None:
        super().__init__()
        self.make, self.seed, self.tag = make, int(seed), int(tag)
        self.start, self.stop = int(start), int(stop)

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        info = get_worker_info()
        w, n = (info.id, info.num_workers) if info is not None else (0, 1)
        for step in range(self.start + w, self.stop, n):
            yield step, self.make(step_rng(self.seed, self.tag, step))


def loader_context() -> str:
    """Start method of the loader's workers: ``fork`` where available, else ``spawn``."""
    return "fork" if "fork" in mp.get_all_start_methods() else "spawn"


def step_batches(make: Callable[[np.random.Generator], Any], seed: int, tag: int, start: int, stop: int,
                 workers: int, pin_memory: bool = False, context: str | None = None,
                 prefetch: int = 4) -> Iterator[Any]:
    """Batches of steps ``start, start + 1, ...`` (< ``stop``) in order: made in ``workers``
    DataLoader processes, or in this process when ``workers <= 0`` (the same batches).

    ``make(rng)`` returns the batch (tensors, numpy arrays, lists); ``pin_memory`` pins its tensors
    for asynchronous copies to a GPU. Raises RuntimeError when a batch arrives out of order.
    """
    ds = StepBatches(make, seed, tag, start, stop)
    n = max(0, int(workers))
    extra: dict[str, Any] = {"multiprocessing_context": context or loader_context(), "prefetch_factor": prefetch} if n else {}
    # batch_size=None: no collation; every batch goes through default_convert (numpy -> tensors),
    # in this process (n = 0) as in the workers
    loader = DataLoader(ds, batch_size=None, num_workers=n, pin_memory=pin_memory, **extra)
    it = iter(loader)
    try:
        for expect, (step, batch) in enumerate(it, start):
            if int(step) != expect:
                raise RuntimeError(f"step loader: got the batch of step {int(step)} where {expect} was due")
            yield batch
    finally:
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
