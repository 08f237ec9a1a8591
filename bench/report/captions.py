"""The caption of every figure of a run, in the order the reports show them.

:mod:`bench.report.figures` draws the figures (without titles); ``REPORT.md`` (:mod:`bench.report.markdown`)
and ``report.html`` (:mod:`bench.report.html`) print each one under its caption.
"""

from __future__ import annotations

CAPTIONS = {
    "gain_vs_rate": "Paired SI-SDR gain over the static embedding (dB, mean and 95 % bootstrap CI over test "
                    "mixtures) against the refinement rate alpha, one panel per condition; each line is one "
                    "refiner with every other setting fixed (the legend names the settings that differ: seed, "
                    "rule, gate, ...), anchored at rate 0, where it is static by definition. Dashed: the ceiling "
                    "(teacher on the clean target's blocks); dotted: the shrink control. Nothing is averaged.",
    "gain_vs_temperature": "Paired SI-SDR gain over static (dB, 95 % CI) against the contrastive temperature "
                           "tau of the student's distillation (log scale), one panel per condition, one line "
                           "per refiner, rate and seed. Nothing is averaged.",
    "headroom": "Per condition: paired SI-SDR gain over static (dB, 95 % CI) of the references (clean target, "
                "clean enrollment), the ceiling (teacher on the clean target's blocks), the shrink control, "
                "and each system at its best rate on this test set (the rate is printed on the bar; an "
                "optimistic pick: tune rates on validation). Hatching tells cells of one system apart.",
    "complexity": "Paired SI-SDR gain over static pooled over conditions (dB, 95 % CI; whole mixtures "
                  "resampled) against total MACs per second of audio (backbone + refiner; left) and against "
                  "parameters run per block (backbone + the encoder the refiner runs; right), log scales; the "
                  "line joins the Pareto-optimal cells. Deployable cells only (no references, ceiling or "
                  "control); static is at 0 by definition.",
    "teachers": "Which teacher: pooled over conditions (whole mixtures resampled; 95 % CIs), each teacher's "
                "static SI-SDRi over the mixture (top; its own matched backbone) and the paired gain of every "
                "refiner over that teacher's static (bottom), against the teacher's EER on 1 s crops of the "
                "evaluation speakers (left) and the teacher's MACs per second of audio (right, log; a teacher "
                "whose MACs cannot be counted is left out there). Points of one teacher are offset sideways "
                "a little to keep them apart.",
    "conditions": "Mean SI-SDRi (dB, over the mixture) of every cell (row) on every condition (column); the "
                  "CIs are in the report's tables and in conditions.csv.",
    "quality": "Speech quality pooled over conditions: each cell's mean (rows; 95 % bootstrap CI over the "
               "scored items) of every quality metric the run computed (panels: PESQ-WB, STOI, DNSMOS P.835 "
               "OVRL, pDNSMOS OVRL), the mixture's mean as the dashed line. Where the grid sets eval.quality_n "
               "(eval.mos_n for DNSMOS), only the first that many items per condition are scored, the same "
               "items for the mixture and every cell (the leaderboard's <metric>_n); paired differences from "
               "static are the leaderboard's d_ columns.",
    "speaker_verification": "Speaker verification on the evaluation speakers (crops of 1 s, all pairs): EER (%) "
                            "of each student (points) and of its teacher (black bars) per distillation loss "
                            "(left), and the student's agreement with the teacher (mean cosine between their "
                            "embeddings of the same crops; right). One point per distinct student (loss, "
                            "temperature, seed, inputs, steps): the cells that share a student (several rates) "
                            "show it once. These are single estimates on one crop set, without CIs.",
    "student_quality": "Refinement gain against student quality: the paired SI-SDR gain over static pooled over "
                       "conditions (dB, 95 % CI; whole mixtures resampled) of every student cell against the "
                       "student's EER on the evaluation speakers (left), its agreement with the teacher (middle) "
                       "and the mean cosine of its embeddings to the teacher's mean direction on the validation "
                       "windows (right; the dashed line is the teacher's own value: a student far left of it has "
                       "dropped the direction all teacher embeddings share). One point per cell.",
    "readings": "The two readings of the method side by side: per condition (panels), the paired SI-SDR "
                "difference (dB, 95 % CI) of each cell from the teacher space's static on the same mixtures, "
                "grouped by the space the backbone is conditioned in (teacher space: GE2E; student space: "
                "the named student's own embedding, its backbone trained on it). Squares: each space's "
                "static; circles: refiners; down triangles: the shrink control; up triangles: the "
                "oracle_target ceiling (in that space).",
    "trajectory": "Cosine between the embedding used for each block and the teacher embedding of the clean "
                  "target, averaged over the test utterances of the condition (one panel each), against time "
                  "in the stream; one line per cell.",
    "gain_distribution": "Per-utterance paired SI-SDR gain over static (dB) of every refining cell, one panel "
                         "per condition (box: quartiles; points: utterances).",
    "spectrogram": "Spectrograms (dB) of one test stream: the mixture, the output with the static embedding, "
                   "the output of the refining system with the largest mean SI-SDR gain over static on this "
                   "condition (picked on the test set), and the clean target, time-aligned and cropped (at most "
                   "6 s, around the stream's change when it has one); spectrogram.csv names the stream and "
                   "cells, and the report plays the crops.",
    "sweep_history": "Validation objective of every completed trial of the sweep in trial order (points) and "
                     "the best so far (line).",
    "sweep_map": "Every completed trial at its sampled parameters (axes), coloured by its validation "
                 "objective; parameters not on the axes (in sweep_map.csv) vary between trials too and are not "
                 "shown; nothing is averaged.",
}
FIGURES = tuple(CAPTIONS)
