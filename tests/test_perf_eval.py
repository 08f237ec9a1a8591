"""The evaluation-cost section of bench.perf: its plumbing (numbers are a benchmark's, not a test's)."""

from __future__ import annotations

from bench.metrics.quality import SLOW_MEMO
from bench.perf import metric_items
from bench.perf_eval import HEADER, eval_costs, rows


def test_eval_costs_report_before_after_and_memo():
    items, _ = metric_items(None, 4, 1.0)
    r = eval_costs(items, 1, {"pesq": False, "stoi": True, "estoi": False, "dnsmos": False, "pdnsmos": False},
                   big_n=20)
    assert r["n"] == 4 and r["subset_n"] == 1 and r["metrics"] == ["stoi"]
    for k in ("before_cpu_s_per_mixture", "after_cpu_s_per_mixture", "memo_cpu_s_per_mixture"):
        assert r[k] >= 0
    assert r["projected_after_big_cpu_s"] == 20 * r["si_sdr_cpu_s_per_mixture"] + 1 * r["slow_cpu_s_per_mixture"]
    assert not SLOW_MEMO  # the benchmark leaves no memo behind for the process
    (row,) = rows({"stoi": r})
    assert len(row) == len(HEADER) and row[0] == "stoi"


def test_bench_perf_runs_the_evalcost_section_when_named(monkeypatch):
    from bench import perf, perf_eval

    monkeypatch.setattr(perf_eval, "EVALCOST_SETS", {"stoi": {"pesq": False, "stoi": True, "estoi": False,
                                                               "dnsmos": False, "pdnsmos": False}})
    res = perf.run(perf.build_parser().parse_args(["--only", "evalcost", "--quick"]), [])
    (r,) = res["evalcost"].values()
    assert r["n"] == 6 and r["subset_n"] == 1 and r["metrics"] == ["stoi"]
    text = perf.render(res, markdown=True)
    assert "evaluation cost per mixture" in text and "| stoi | 6 x 4 s | 1 |" in text
    assert "evalcost" not in perf.build_parser().parse_args([]).only  # only when named
