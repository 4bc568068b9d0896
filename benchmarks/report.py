"""Write a load report as JSON, a Markdown summary, and a self-contained HTML page: the summary,
throughput and latency over time, and the latency distribution (inline SVG, no scripts)."""

from __future__ import annotations

import html
import math
import re
from pathlib import Path
from typing import Any

import orjson


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# {report['scenario']}",
        "",
        f"Target {report['url']}, {report['duration_s']} s"
        + (f", server RSS {report['server_rss_mb']} MB" if "server_rss_mb" in report else "")
        + (
            f", load generator CPU {report['generator_cpu']:.0%} of a core"
            + (
                f" in {report['workers']} processes ("
                + ", ".join(f"{w:.0%}" for w in report["generator_cpu_per_worker"])
                + ")"
                if report.get("workers", 1) > 1
                else ""
            )
            if "generator_cpu" in report
            else ""
        ),
        "",
        *(
            [
                f"**The load generator limited this run** ({report['generator_limited']}): its "
                "figures do not measure the server.",
                "",
            ]
            if report.get("generator_limited")
            else []
        ),
        "| stream | asked | achieved | p50 | p90 | p99 | p99.9 | max | statuses |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in report["streams"].items():
        ms = s["latency_ms"]
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(s["statuses"].items()))
        lines.append(
            f"| {name} | "
            + (f"{s['asked_rate']:,.0f} {s['unit']}/s" if s["asked_rate"] else "—")
            + " | "
            f"{s['achieved_rate']:,.0f} {s['unit']}/s | {ms['p50']} ms | {ms['p90']} ms | "
            f"{ms['p99']} ms | {ms['p99.9']} ms | {ms['max']} ms | {statuses} |"
        )
    fans = report.get("subscribers")
    if fans is not None:
        worst = fans["worst_delay_ms"]
        lines += [
            "",
            f"Live subscribers: {fans['connected']:,} of {fans['asked']:,} connected"
            + (f" (not: {fans['not_connected']})" if fans["not_connected"] else "")
            + f", {fans['dropped']:,} dropped by the server, {fans['writes']:,} acknowledged "
            f"writes followed. The `delivery` row is every (write, subscriber) delay from the "
            f"acknowledgement to the message that carried it; each subscriber's worst delay: "
            + (
                f"p50 {worst['p50']} ms, p99 {worst['p99']} ms, max {worst['max']} ms."
                if worst["p50"] is not None
                else "none (no subscriber connected)."
            ),
        ]
    return "\n".join(lines) + "\n"


COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
WIDTH, HEIGHT, LEFT, RIGHT, BOTTOM = 900, 240, 60, 40, 34


def _step(top: float) -> float:
    """A round gridline step (1, 2 or 5 x 10^k) giving four to ten lines up to ``top``."""
    raw = top / 5
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    return next((m * power for m in (1, 2, 5, 10) if m * power >= raw), 10 * power)


def _number(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:.3g}M"
    if v >= 1e3:
        return f"{v / 1e3:.3g}k"
    return f"{v:.3g}"


def chart(
    title: str,
    series: dict[str, list[tuple[float, float]]],
    x_label: str,
    y_unit: str,
    dots: bool = False,
    x_ticks: list[tuple[float, str]] | None = None,
) -> str:
    """One SVG chart: lines (or dots) per series, a zero-based y axis with five gridlines, the
    x axis from 0 to its largest value (or ``x_ticks``), a legend."""
    points = [p for values in series.values() for p in values]
    if not points:
        return f"<h3>{html.escape(title)}</h3><p>no samples</p>"
    x_max = max(max(p[0] for p in points), max((t for t, _ in x_ticks or []), default=0)) or 1.0
    y_step = _step(max(p[1] for p in points) or 1.0)
    y_max = y_step * math.ceil(max(p[1] for p in points) * 1.05 / y_step) or y_step
    w, h = WIDTH - LEFT - RIGHT, HEIGHT - BOTTOM - 10

    def x(v: float) -> float:
        return LEFT + v / x_max * w

    def y(v: float) -> float:
        return 10 + h - v / y_max * h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'font-family="sans-serif" font-size="11">',
        f'<line x1="{LEFT}" y1="{10 + h}" x2="{LEFT + w}" y2="{10 + h}" stroke="#999"/>',
    ]
    for i in range(round(y_max / y_step) + 1):
        v = y_step * i
        parts.append(
            f'<line x1="{LEFT}" y1="{y(v):.1f}" x2="{LEFT + w}" y2="{y(v):.1f}" stroke="#eee"/>'
            f'<text x="{LEFT - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{_number(v)}</text>'
        )
    x_step = _step(x_max)
    ticks = x_ticks or [(x_step * i, _number(x_step * i)) for i in range(int(x_max / x_step) + 1)]
    for v, label in ticks:
        parts.append(
            f'<text x="{x(v):.1f}" y="{10 + h + 14}" text-anchor="middle">'
            f"{html.escape(label)}</text>"
        )
    parts.append(
        f'<text x="{LEFT + w / 2}" y="{HEIGHT - 4}" text-anchor="middle">'
        f"{html.escape(x_label)}</text>"
        f'<text x="12" y="{10 + h / 2}" transform="rotate(-90 12 {10 + h / 2})" '
        f'text-anchor="middle">{html.escape(y_unit)}</text>'
    )
    for n, (name, values) in enumerate(series.items()):
        colour = COLOURS[n % len(COLOURS)]
        if dots:
            parts.extend(
                f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="1.5" fill="{colour}"/>'
                for t, v in values
            )
        elif values:
            path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in values)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>'
            )
        parts.append(
            f'<text x="{LEFT + w - 4}" y="{24 + 14 * n}" text-anchor="end" '
            f'fill="{colour}">{html.escape(name)}</text>'
        )
    parts.append("</svg>")
    return f"<h3>{html.escape(title)}</h3>" + "".join(parts)


def _tail(p: float) -> float:
    """Where percentile ``p`` sits on a distribution plot: log10 of 1 / (1 - p), so that 90,
    99, 99.9 and 99.99 are evenly spaced (as HdrHistogram's plots)."""
    return math.log10(1 / max(1 - p / 100, 1e-5))


def plots(report: dict[str, Any]) -> str:
    """Throughput over time (per stream, against what was asked), latency over time, and the
    latency distribution."""
    parts = []
    whole = int(report["duration_s"])  # seconds that ran to their end (not the last, partial)
    for name, per_second in report.get("throughput", {}).items():
        stream = report["streams"][name]
        unit = f"{stream['unit']}/s"
        done = per_second[:whole] or per_second
        lines = {f"{name} achieved": [(t + 0.5, float(n)) for t, n in enumerate(done)]}
        if stream["asked_rate"]:
            end = float(len(done))
            lines[f"asked {_number(stream['asked_rate'])}/s"] = [
                (0.0, stream["asked_rate"]),
                (end, stream["asked_rate"]),
            ]
        parts.append(chart(f"{name}: throughput over time", lines, "seconds", unit))
    parts.append(
        chart(
            "latency over time (from each request's intended send time)",
            {k: [(t, ms) for t, ms in v] for k, v in report["timelines"].items()},
            "seconds",
            "ms",
            dots=True,
        )
    )
    distribution = {
        name: [(_tail(p), ms) for p, ms in s.get("distribution", []) if p < 100]
        for name, s in report["streams"].items()
    }
    ticks = [(_tail(p), f"p{p:g}") for p in (0, 90, 99, 99.9, 99.99, 99.999)]
    parts.append(chart("latency distribution", distribution, "percentile", "ms", x_ticks=ticks))
    return "".join(parts)


def write(report: dict[str, Any], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / report["scenario"]
    summary = {k: v for k, v in report.items() if k not in ("timelines", "throughput")}
    json_path = stem.with_suffix(".json")
    json_path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    md_path = stem.with_suffix(".md")
    md_path.write_text(markdown(summary))
    html_path = stem.with_suffix(".html")
    html_path.write_text(
        f"<!doctype html><meta charset=utf-8><title>{html.escape(stem.name)}</title>"
        "<style>body{font-family:sans-serif;max-width:920px;margin:1em}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;"
        "padding:2px 6px;text-align:right}td:first-child{text-align:left}"
        "h3{font-size:15px;margin:1.2em 0 0}</style>"
        f"<body>{_html(markdown(summary))}{plots(report)}</body>"
    )
    return [json_path, md_path, html_path]


def _html(text: str) -> str:
    """The Markdown summary as HTML: its heading, paragraphs and table (nothing else is in it)."""
    out, rows = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            if not line.startswith("|---"):
                rows.append([html.escape(c.strip()) for c in line.strip("|").split("|")])
            continue
        if rows:
            head, *body = rows
            out.append(
                "<table><tr>"
                + "".join(f"<th>{c}</th>" for c in head)
                + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body)
                + "</table>"
            )
            rows = []
        if line.startswith("# "):
            out.append(f"<h2>{html.escape(line[2:])}</h2>")
        elif line:
            escaped = html.escape(line)
            out.append("<p>" + re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escaped) + "</p>")
    return "".join(out)
