"""Write a load report as JSON, a Markdown summary, and a self-contained HTML latency plot."""

from __future__ import annotations

import html
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
            f"| {name} | {s['asked_rate']:,.0f} {s['unit']}/s | "
            f"{s['achieved_rate']:,.0f} {s['unit']}/s | {ms['p50']} ms | {ms['p90']} ms | "
            f"{ms['p99']} ms | {ms['p99.9']} ms | {ms['max']} ms | {statuses} |"
        )
    return "\n".join(lines) + "\n"


def svg(
    timelines: dict[str, list[tuple[float, float]]], width: int = 900, height: int = 300
) -> str:
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    points = [p for series in timelines.values() for p in series]
    if not points:
        return "<p>no samples</p>"
    x_max = max(p[0] for p in points) or 1.0
    y_max = max(p[1] for p in points) or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 30}">',
        f'<text x="0" y="12" font-size="11">latency (ms, max {y_max:.1f}) over time '
        f"(s, {x_max:.1f})</text>",
    ]
    for colour, (name, series) in zip(colours, timelines.items(), strict=False):
        for t, latency in series:
            x = 40 + t / x_max * (width - 50)
            y = 20 + height - latency / y_max * height
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="1.5" fill="{colour}"/>')
        parts.append(
            f'<text x="{width - 160}" y="{24 + 14 * list(timelines).index(name)}" '
            f'font-size="11" fill="{colour}">{html.escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def write(report: dict[str, Any], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / report["scenario"]
    summary = {k: v for k, v in report.items() if k != "timelines"}
    json_path = stem.with_suffix(".json")
    json_path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    md_path = stem.with_suffix(".md")
    md_path.write_text(markdown(summary))
    html_path = stem.with_suffix(".html")
    table = html.escape(markdown(summary))
    html_path.write_text(
        f"<!doctype html><meta charset=utf-8><title>{html.escape(stem.name)}"
        f"</title><pre>{table}</pre>{svg(report['timelines'])}"
    )
    return [json_path, md_path, html_path]
