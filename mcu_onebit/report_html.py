"""The `eval` report as one self-contained HTML page: the figures, a confusion matrix and
a latency histogram (matplotlib, embedded as base64 PNG), and the disagreements."""

from __future__ import annotations

import base64
import html
import io

import numpy as np

from .eval_journal import SampleRecord
from .eval_report import EvalReport

_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .7em;text-align:left}
th{background:#f3f3f3}.bad{color:#b00}.ok{color:#070}img{max-width:100%}"""


def render_html(report: EvalReport, samples: dict[int, SampleRecord]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    esc = html.escape
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in _summary_rows(report))
    board_rows = "".join(
        f"<tr><td>{esc(b.port)}</td><td>{esc(b.board)}</td><td>{b.samples}</td><td>{b.accuracy_device:.4f}</td>"
        f"<td>{b.agreement:.4f}</td><td>{_lat(b.latency)}</td><td>{b.arena_bytes:,}</td>"
        f"<td>{'-' if b.flash_bytes is None else f'{b.flash_bytes:,}'}</td></tr>"
        for b in report.boards
    )
    agree_class = "ok" if report.agreement == 1.0 else "bad"
    disagreements = ", ".join(str(i) for i in report.disagreements[:200]) or "none"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mcu-onebit eval: {esc(report.board)} {esc(report.model_hash)}</title>
<style>{_STYLE}</style></head><body>
<h1>On-device evaluation: {esc(report.board)}</h1>
<p>Model <code>{esc(report.model_hash)}</code> on {esc(report.dataset)}: {report.samples} of {report.planned} samples;
agreement with the host (identical output bytes): <b class="{agree_class}">{report.agreement:.4f}</b>.</p>
<table>{rows}</table>
<h2>Boards</h2>
<table><tr><th>port</th><th>board</th><th>samples</th><th>accuracy</th><th>agreement</th>
<th>latency median / p90 / max</th><th>arena B</th><th>flash B</th></tr>{board_rows}</table>
<h2>Confusion matrix (device)</h2>
<img alt="confusion matrix" src="data:image/png;base64,{_confusion_png(report)}">
<h2>Latency</h2>
<img alt="latency histogram" src="data:image/png;base64,{_latency_png(report, samples)}">
<h2>Disagreements with TFLite</h2><p>{esc(disagreements)}</p>
</body></html>
"""


def _summary_rows(report: EvalReport) -> list[tuple[str, str]]:
    run = report.run
    rows = [
        ("accuracy (device)", f"{report.accuracy_device:.4f}"),
        ("accuracy (host, TFLite reference)", f"{report.accuracy_host:.4f}"),
        ("accuracy (host, TFLite Micro)", f"{report.accuracy_host_tflm:.4f}"),
        ("agreement with TFLite Micro", f"{report.agreement_tflm:.4f}"),
        ("latency median / p90 / max", _lat(report.latency)),
        ("arena", f"{report.arena_bytes:,} B"),
        ("throughput", f"{run.samples_per_s:.1f} samples/s, {run.link_bytes_per_sample:.0f} link bytes/sample"),
        ("host overhead", f"{run.host_overhead:.1%} of {run.wall_s:.1f} s streaming"),
        ("link trouble", f"{run.noise} damaged, {run.silences} timed out, {run.resets} resets, {run.reconnects} reconnects"),
    ]
    if report.flash_bytes is not None:
        rows.insert(6, ("flash", f"{report.flash_bytes:,} B"))
    return rows


def _lat(lat) -> str:
    if lat is None:
        return "-"
    text = f"{lat.median:,.0f} / {lat.p90:,.0f} / {lat.max:,} {lat.unit}"
    if lat.median_ms is not None:
        text += f" ({lat.median_ms:.2f} / {lat.p90_ms:.2f} / {lat.max_ms:.2f} ms)"
    return text


def _png(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _confusion_png(report: EvalReport) -> str:
    import matplotlib.pyplot as plt

    matrix = np.asarray(report.confusion)
    n = len(matrix)
    figure, axes = plt.subplots(figsize=(1.2 + 0.45 * max(n, 4), 1.0 + 0.45 * max(n, 4)))
    axes.imshow(matrix, cmap="Blues")
    names = (report.class_names + [str(i) for i in range(len(report.class_names), n)])[:n]
    axes.set_xticks(range(n), names, rotation=90 if n > 12 else 0)
    axes.set_yticks(range(n), names)
    axes.set_xlabel("device prediction")
    axes.set_ylabel("true label")
    if n <= 20:
        top = matrix.max(initial=0)
        for (i, j), value in np.ndenumerate(matrix):
            if value:
                axes.text(j, i, str(value), ha="center", va="center", fontsize=8,
                          color="white" if value > top / 2 else "black")
    return _png(figure)


def _latency_png(report: EvalReport, samples: dict[int, SampleRecord]) -> str:
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, axes = plt.subplots(figsize=(7, 3.2))
    for board in report.boards:
        counts = [r.count for r in samples.values() if r.port == board.port]
        if counts:
            axes.hist(counts, bins=40, alpha=0.6, label=f"{board.board} {board.port}")
    unit = report.latency.unit if report.latency else (report.boards[0].counter if report.boards else "")
    axes.set_xlabel(f"{unit} per inference")
    axes.set_ylabel("samples")
    # Whole counts in full (no "+1.08e6" offset): under QEMU -icount every inference of a
    # model often takes the same count, and the axis must still read as that count.
    axes.ticklabel_format(axis="x", style="plain", useOffset=False)
    axes.xaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
    distinct = {r.count for r in samples.values()}
    if len(distinct) == 1:  # one bar: one tick at its count, not five ticks rounding to it
        axes.set_xticks(sorted(distinct))
    if len(report.boards) > 1:
        axes.legend(fontsize=8)
    return _png(figure)
