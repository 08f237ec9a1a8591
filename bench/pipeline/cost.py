"""What a cell costs: parameters and MACs per second of audio of backbone, teacher, student and
refiner."""

from __future__ import annotations

import logging
from typing import Any

from bench.audio import SR
from bench.cache import config_hash
from bench.config import RefineConfig

log = logging.getLogger("bench")


def complexity(stages: Any, refine_cfg: RefineConfig, personalized: bool, refining: bool, model: Any, refiner: Any,
               student: Any, teacher: Any) -> dict[str, Any]:
    """Params and MACs per second of audio of backbone, teacher, student and refiner.

    The refiner's extra MACs are its encoder's MACs on one block (plus context) times blocks
    per second, with the block length rounded to the backbone's hop as streaming does; they are
    counted only when the cell ``refining`` (its refiner updates the embedding at a rate above 0).
    Each count is memoised on ``stages`` by what it depends on (model, encoder, block, context,
    student mode), so a grid traces each model once rather than once per cell.
    """
    from bench.metrics.complexity import backbone_macs_report, count_params
    from bench.refine import block_samples, encoder_macs_per_s

    block = block_samples(refine_cfg.block_s, model.hop)
    ctx = int(round(getattr(refine_cfg, "context_s", 0.0) * SR))
    mode = getattr(refine_cfg, "student_mode", "window")

    def backbone() -> tuple[float, str]:
        rep = backbone_macs_report(model)
        return float(rep["per_second"]), ",".join(sorted(rep["unsupported"] or []))

    def counted(what: str, key: tuple, fn: Any) -> float:
        return stages.memoised("macs", config_hash(what, *key), lambda: _safe(fn, what))

    pse_macs, unsupported = stages.memoised("macs", config_hash("pse", id(model), personalized), backbone)
    t_params = count_params(teacher)
    out: dict[str, Any] = {
        "pse_macs_per_s": pse_macs,
        "teacher_params": t_params["learnable"] + t_params["fixed"],
        "teacher_macs_per_s": counted("teacher", (teacher.identity, block, ctx),
                                      lambda: encoder_macs_per_s(teacher.embed, block, ctx)),
        "student_params": count_params(student)["learnable"] if student is not None else 0,
        # what the student costs per second of audio the way this cell runs it (window: block +
        # context per block; streaming: each block once)
        "student_macs_per_s": counted("student", (id(student), mode, block, ctx),
                                      lambda: _student_macs(mode, student, block, ctx)) if student is not None else 0.0,
    }
    # alpha = 0 never runs the encoder (bit-identical to static), so it costs nothing extra.
    out["extra_macs_per_s"] = 0.0
    if refining:
        from bench.refine import Refiner

        # a student refiner that counts the default way costs exactly the student's MACs
        same = (student is not None and getattr(refiner, "student", None) is student
                and type(refiner).count_extra_macs is Refiner.count_extra_macs)
        out["extra_macs_per_s"] = out["student_macs_per_s"] if same else counted(
            "refiner", _encoder_identity(refiner, block), lambda: refiner.count_extra_macs(block))
        refiner.extra_macs_per_s = out["extra_macs_per_s"]
    out["total_macs_per_s"] = out["pse_macs_per_s"] + out["extra_macs_per_s"]
    out["unsupported_ops"] = unsupported
    return out


def _encoder_identity(refiner: Any, block: int) -> tuple:
    """What a refiner's extra MACs depend on: its class, the model it encodes with (the student a
    streaming wrapper streams), its context, its student mode and the block."""
    enc = refiner.encoder()
    owner = getattr(enc, "__self__", enc)
    owner = getattr(owner, "student", owner)
    return (type(refiner).__name__, id(owner), refiner.context_s, getattr(refiner, "mode", ""), block)


def _student_macs(mode: str, student: Any, block: int, ctx: int) -> float:
    """MACs per second of audio of the student run in ``refine.student_mode`` ``mode``."""
    from bench.refine import encoder_macs_per_s

    if mode == "streaming":
        from bench.students.streaming import streaming_encoder

        return encoder_macs_per_s(streaming_encoder(student), block, 0)
    return encoder_macs_per_s(student, block, ctx)


def _safe(fn: Any, what: str) -> float:
    """A MAC count that fails is reported as NaN with a warning; it never loses the cell."""
    try:
        return float(fn())
    except Exception as exc:  # noqa: BLE001
        log.warning("could not count MACs of the %s: %s", what, exc)
        return float("nan")
