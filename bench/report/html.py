"""``report.html`` of a finished run: one self-contained file that opens from disk, with no
server and no network (inline CSS and JavaScript, figures and audio as ``data:`` URIs).

It holds the provenance (the items of ``REPORT.md``), the leaderboard as a table that sorts by
any column (click a header; again to reverse) and filters by teacher, loss and condition, every
figure of ``figures/`` with its caption, and players for the spectrogram example's audio
(``example/``). The view is mirrored in the URL's fragment, so a view can be linked and opened
directly: ``report.html#sort=d_si_sdr_mean:desc&condition=clean``. Once its script has run, the
page's root element carries ``data-report-ready="ok"`` (``error: ...`` if it failed), which the
browser test reads. Written by ``bench.run`` after ``REPORT.md``; redraw with
``python -m bench.figures --run DIR``.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

# (header, leaderboard column or CI prefix, kind): ``ci`` shows ``<prefix>_mean`` [lo, hi]
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("system", "system", "text"), ("role", "role", "text"), ("teacher", "teacher", "text"),
    ("loss", "loss", "text"), ("tau", "tau", "num"), ("alpha", "alpha", "num"), ("rule", "rule", "text"),
    ("gate", "gate", "text"), ("seed", "seed", "text"), ("condition", "condition", "text"), ("n", "n", "num"),
    ("SI-SDRi (dB)", "si_sdri", "ci"), ("PESQ", "pesq", "ci"), ("STOI", "stoi", "ci"),
    # only where eval.metrics computed them
    ("DNSMOS OVRL", "dnsmos_ovrl", "ci"), ("pDNSMOS OVRL", "pdnsmos_ovrl", "ci"),
    ("OVRL vs static", "d_dnsmos_ovrl", "ci"),
    ("vs static (dB)", "d_si_sdr", "ci"), ("p (Holm)", "p_d_si_sdr_holm", "p"),
    ("vs shrink (dB)", "ds_si_sdr", "ci"), ("late vs static (dB)", "d_late_si_sdr", "ci"),
    ("headroom (dB)", "headroom_si_sdr", "ci"), ("recovered", "recovered_frac", "num"),
    ("student EER (%)", "student_eer", "pct"), ("teacher EER (%)", "teacher_eer", "pct"),
    ("agreement", "student_agreement", "num"), ("MMAC/s", "total_macs_per_s", "mmac"),
)
FILTERS = ("teacher", "loss", "condition")
ALL = "*"

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1400px;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
dl.prov{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em}dl.prov dt{font-weight:600}
dl.prov dd{margin:0;font-family:monospace;font-size:12px;word-break:break-all}
.controls{margin:.5em 0;display:flex;gap:1em;flex-wrap:wrap;align-items:center}
.wrap{overflow:auto;max-height:80vh;border:1px solid #ddd}
table{border-collapse:collapse;font-size:12px}th,td{padding:2px 6px;border-bottom:1px solid #eee;white-space:nowrap}
th{position:sticky;top:0;background:#f4f4f4;cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
td.n{text-align:right;font-variant-numeric:tabular-nums}tr:hover td{background:#fafae0}
figure{margin:1.2em 0}figure img{max-width:100%}figcaption{font-size:13px;color:#444;max-width:70em}
.audio{display:grid;grid-template-columns:max-content auto;gap:.4em 1em;align-items:center}
"""

SCRIPT = r"""
(function () {
  var root = document.documentElement;
  try {
    var table = document.getElementById('board'), body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
    var selects = Array.prototype.slice.call(document.querySelectorAll('select[data-filter]'));
    var state = {col: null, dir: 1};
    function key(tr, i) {
      var td = tr.cells[i], v = td.getAttribute('data-v');
      if (v === null || v === '') return null;
      if (heads[i].getAttribute('data-type') !== 'text') { var x = parseFloat(v); return isNaN(x) ? null : x; }
      return v;
    }
    function sortBy(col, dir) {
      var i = heads.findIndex(function (h) { return h.getAttribute('data-col') === col; });
      if (i < 0) return;
      var order = rows.slice().sort(function (a, b) {
        var x = key(a, i), y = key(b, i);
        if (x === null || y === null) {
          if (x === null && y === null) return a.dataset.i - b.dataset.i;
          return x === null ? 1 : -1;  // missing values last, in either direction
        }
        if (x < y) return -dir; if (x > y) return dir;
        return a.dataset.i - b.dataset.i;
      });
      order.forEach(function (tr) { body.appendChild(tr); });
      heads.forEach(function (h) { h.removeAttribute('aria-sort'); });
      heads[i].setAttribute('aria-sort', dir > 0 ? 'ascending' : 'descending');
      state.col = col; state.dir = dir;
    }
    function filter() {
      var shown = 0;
      rows.forEach(function (tr) {
        var ok = selects.every(function (s) { return s.value === '*' || tr.getAttribute('data-' + s.dataset.filter) === s.value; });
        tr.hidden = !ok; if (ok) shown++;
      });
      document.getElementById('count').textContent = shown + ' of ' + rows.length + ' rows';
      root.setAttribute('data-rows-shown', String(shown));
    }
    function writeHash() {
      var parts = [];
      if (state.col) parts.push('sort=' + encodeURIComponent(state.col) + ':' + (state.dir > 0 ? 'asc' : 'desc'));
      selects.forEach(function (s) { if (s.value !== '*') parts.push(s.dataset.filter + '=' + encodeURIComponent(s.value)); });
      try { history.replaceState(null, '', parts.length ? '#' + parts.join('&') : location.pathname); } catch (e) {}
    }
    function readHash() {
      location.hash.replace(/^#/, '').split('&').forEach(function (kv) {
        if (!kv) return;
        var p = kv.split('='), k = p[0], v = decodeURIComponent(p.slice(1).join('='));
        if (k === 'sort') { var m = v.split(':'); sortBy(m[0], m[1] === 'desc' ? -1 : 1); return; }
        selects.forEach(function (s) {
          if (s.dataset.filter === k && Array.prototype.some.call(s.options, function (o) { return o.value === v; })) s.value = v;
        });
      });
    }
    heads.forEach(function (h) {
      h.addEventListener('click', function () {
        var col = h.getAttribute('data-col');
        sortBy(col, state.col === col ? -state.dir : (h.getAttribute('data-type') === 'text' ? 1 : -1));
        writeHash();
      });
    });
    selects.forEach(function (s) { s.addEventListener('change', function () { filter(); writeHash(); }); });
    readHash();
    filter();
    root.setAttribute('data-report-ready', 'ok');
  } catch (e) {
    root.setAttribute('data-report-ready', 'error: ' + e);
  }
})();
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _text(v: Any) -> str:
    """A text cell's value ("" when missing; integral floats such as seeds without ``.0``)."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _cell(r: pd.Series, col: str, kind: str) -> str:
    """One ``<td>``: the shown text and, in ``data-v``, the exact value it sorts by."""
    if kind == "text":
        t = _text(r.get(col))
        return f'<td data-v="{_e(t)}">{_e(t)}</td>'
    src = f"{col}_mean" if kind == "ci" else col
    v = r.get(src)
    if not _finite(v):
        return '<td class="n" data-v=""></td>'
    v = float(v)
    if kind == "ci":
        lo, hi = r.get(f"{col}_ci_lo"), r.get(f"{col}_ci_hi")
        digits = 3 if col in ("pesq", "stoi") else 2
        text = f"{v:+.{digits}f}" + (f" [{float(lo):+.{digits}f}, {float(hi):+.{digits}f}]"
                                     if _finite(lo) and _finite(hi) else "")
    else:
        text = {"p": f"{v:.2g}", "pct": f"{100 * v:.1f}", "mmac": f"{v / 1e6:.1f}"}.get(kind, f"{v:.4g}")
    return f'<td class="n" data-v="{v!r}">{_e(text)}</td>'


def _columns(board: pd.DataFrame) -> list[tuple[str, str, str]]:
    """The :data:`COLUMNS` the leaderboard has."""
    return [(h, c, k) for h, c, k in COLUMNS if (f"{c}_mean" if k == "ci" else c) in board]


def table_html(board: pd.DataFrame) -> str:
    """The leaderboard as a sortable table: one ``<tr data-i>`` per row of ``leaderboard.csv``."""
    cols = _columns(board)
    head = "".join(f'<th data-col="{_e(f"{c}_mean" if k == "ci" else c)}" '
                   f'data-type="{"text" if k == "text" else "num"}" title="{_e(c)}">{_e(h)}</th>' for h, c, k in cols)
    body = []
    for i, (_, r) in enumerate(board.iterrows()):
        attrs = " ".join(f'data-{f}="{_e(_text(r.get(f)))}"' for f in FILTERS)
        body.append(f'<tr data-i="{i}" {attrs}>' + "".join(_cell(r, c, k) for _, c, k in cols) + "</tr>")
    return (f'<div class="wrap"><table id="board"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def filters_html(board: pd.DataFrame) -> str:
    """A select box per :data:`FILTERS` column (``*``: every value), and the shown-row count."""
    parts = []
    for f in FILTERS:
        values = sorted({_text(v) for v in board[f]}) if f in board else []
        opts = "".join(f'<option value="{_e(v)}">{_e(v or "(none)")}</option>' for v in values)
        parts.append(f'<label>{_e(f)} <select data-filter="{_e(f)}"><option value="{ALL}">all</option>'
                     f'{opts}</select></label>')
    return f'<div class="controls">{"".join(parts)}<span id="count"></span></div>'


def _data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def figures_html(run_dir: Path) -> str:
    """Every figure of ``figures/`` (in :data:`bench.report.captions.CAPTIONS` order) with its caption."""
    from bench.report.captions import CAPTIONS

    out = []
    for name, caption in CAPTIONS.items():
        png = run_dir / "figures" / f"{name}.png"
        if not png.is_file():
            continue
        out.append(f'<figure id="fig-{_e(name)}"><img alt="{_e(name)}" src="{_data_uri(png, "image/png")}">'
                   f"<figcaption><b>{_e(name)}.</b> {_e(caption)} <small>(PDF and plotted points: "
                   f"figures/{_e(name)}.pdf, figures/{_e(name)}.csv)</small></figcaption></figure>")
    return "\n".join(out) or "<p>No figures were drawn for this run.</p>"


def audio_html(run_dir: Path) -> str:
    """Players for the spectrogram example's crops (``example/``), with what each one is."""
    meta_path = run_dir / "example" / "example.json"
    if not meta_path.is_file():
        return ""
    from bench.report.assets import spectrogram_points

    pts = spectrogram_points(run_dir)
    meta = json.loads(meta_path.read_text())
    rows = []
    for _, r in pts.iterrows():
        wav = run_dir / r["file"]
        if not wav.is_file():
            continue
        what = r["name"] + (f" ({r['system']})" if r["system"] and r["system"] != r["name"] else "")
        sdr = f", whole-stream SI-SDR {float(r['si_sdr']):.2f} dB" if _finite(r.get("si_sdr")) else ""
        rows.append(f"<span>{_e(what + sdr)}</span>"
                    f'<audio controls preload="none" src="{_data_uri(wav, "audio/wav")}"></audio>')
    return (f"<h2>Example stream</h2><p>Condition <b>{_e(meta['condition'])}</b>, stream {_e(meta['utt'])} "
            f"(speaker {_e(meta.get('speaker', '?'))}), {meta['crop_s']:.1f} s from {meta['crop_start_s']:.1f} s, "
            f"all four scaled by one gain ({meta['gain']:.3g}). The spectrograms are in the figures above.</p>"
            f'<div class="audio">{"".join(rows)}</div>')


def provenance_html(run_dir: Path, board: pd.DataFrame) -> str:
    from bench.report.markdown import provenance_items

    items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in provenance_items(run_dir, board))
    return f'<h2>Provenance</h2><dl class="prov">{items}</dl>'


def render(run_dir: Path) -> str:
    """The whole page of a run folder (see the module docstring)."""
    board = pd.read_csv(run_dir / "leaderboard.csv")
    title = run_dir.name
    if (run_dir / "provenance.json").is_file():
        title = json.loads((run_dir / "provenance.json").read_text()).get("grid", title)
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Report: {_e(title)}</title>", f"<style>{STYLE}</style></head><body>",
        f"<h1>Report: {_e(title)}</h1>",
        "<p>Means over test mixtures with 95 % bootstrap CIs; <i>vs static</i> / <i>vs shrink</i>: paired SI-SDR "
        "differences against the static embedding and the shrink control at the same rate; <i>p (Holm)</i>: "
        "Wilcoxon signed-rank p-value of the gain over static, Holm-corrected over the grid; <i>headroom</i>: the "
        "ceiling (teacher on the clean target's blocks) minus static. Click a header to sort.</p>",
        provenance_html(run_dir, board), "<h2>Leaderboard</h2>", filters_html(board), table_html(board),
        "<h2>Figures</h2>", figures_html(run_dir), audio_html(run_dir),
        f"<script>{SCRIPT}</script>", "</body></html>",
    ])


def write_html(run_dir: Path) -> Path:
    """Write ``<run_dir>/report.html`` (see the module docstring)."""
    from bench.cache import atomic_write_text

    path = run_dir / "report.html"
    atomic_write_text(path, render(run_dir))
    return path
