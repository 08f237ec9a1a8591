"""bench.perf's scale section: the plumbing of the quick path at a tiny size (the timings are not tested)."""

from __future__ import annotations

import json

import soundfile as sf

from bench import perf, perf_scale


def test_sizes_rows_and_the_default_sections():
    assert perf_scale.plan(100) == (100_000, 3.6)
    assert perf_scale.plan(1000) == (250_000, 14.4)  # longer rows beyond --scale-max-rows
    assert perf_scale.plan(10, 2.0, 1000) == (1000, 36.0)
    assert "scale" not in perf.build_parser().parse_args([]).only.split(",")


def test_the_corpus_is_hard_links_to_a_few_files(tmp_path):
    made = perf_scale.write_corpus(tmp_path, 0.05, speakers=12, files=10)
    lines = (tmp_path / "manifest.csv").read_text().splitlines()
    assert lines[0] == "path,speaker" and len(lines) == 1 + made["rows"] == 51
    assert len({line.split(",")[1] for line in lines[1:]}) == 12
    first = tmp_path / lines[1].split(",")[0]
    assert first.stat().st_nlink == 6  # 50 rows on 10 files
    info = sf.info(str(first))
    assert info.samplerate == 16000 and info.subtype == "PCM_16" and abs(info.frames - 3.6 * 16000) <= 1


def test_quick_scale_run_writes_its_tables(tmp_path):
    out = tmp_path / "perf_scale"
    argv = ["--only", "scale", "--quick", "--scale-hours", "0.05", "--scale-speakers", "12", "--scale-files", "10",
            "--scale-draws", "48", "--scale-workers", "0,2", "--out", str(out)]
    assert perf.main(argv) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    (size,) = res["scale"]["sizes"]
    assert size["rows"] == 50 and size["speakers"] == 12
    for phase in ("cold", "warm"):
        assert size[phase]["utterances"] == 50 and size[phase]["total_s"] > 0
        assert abs(sum(size[phase]["phases"].values()) - size[phase]["total_s"]) < 1e-6
    assert size["cold"]["key"] == size["warm"]["key"]
    assert size["cold"]["phases"]["content key (hash)"] > 0 and size["cache_bytes"]["fileinfo"] > 0
    assert size["cache_bytes"]["validated"] > 0 and size["other_cores"] >= 0
    by_workers = {m["workers"]: m for m in size["memory"]}
    assert set(by_workers) == {0, 2}
    assert by_workers[0]["first"]["processes"] == 1 and by_workers[2]["first"]["processes"] == 3
    for m in by_workers.values():
        assert m["mixtures"] >= 48 and m["first"]["rss_mb"] > 0 and m["mixtures_per_s_per_process"] > 0
    md = out.with_suffix(".md").read_text()
    assert md.startswith("`python -m bench.perf --only scale --quick")
    assert "**scale: start-up" in md and "| 0.05 h | 50 | 3.6 | cold |" in md and "mixtures/s per process" in md
