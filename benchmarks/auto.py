"""A query mix derived from the server's own views: ``tallyd bench run query --url URL --auto``.

From ``GET /v1/views`` and a sample of each view's rows, for every view the user defined:

* **point** lookups (weight 4): one group, by each key, on key values sampled from its rows;
* **top-N** (weight 2): the ten largest groups by each numeric aggregate;
* **rollup** (weight 1): every key folded away (``group_by=``), over all time for a view of
  tumbling windows (a hop view's overlapping windows are kept);
* **series** (weight 2), windowed views: the last hour of the view's chart metric (or its first
  numeric one), split by its first key, top five;
* **CSV** (weight 1): a page of rows as CSV.

The mix is printed before the run as a scenario's ``[query]`` table (``--save FILE`` writes the
whole scenario), so it can be edited and kept in git like the views.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import aiohttp

NUMERIC = {"int", "float", "number"}
SAMPLE = 50  # rows read per view to sample key values from
VALUES = 20  # key values kept per key


async def derive(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """The ``[query]`` table (``templates`` and ``params``) for the server at ``url``."""
    async with session.get(f"{url}/v1/views", headers=headers) as response:
        response.raise_for_status()
        views = (await response.json())["views"]
    templates: list[dict[str, Any]] = []
    params: dict[str, list[str]] = {}
    for view in views:
        name = view["name"]
        base = f"/v1/views/{urllib.parse.quote(name)}"
        numeric = [
            c["name"] for c in view["columns"] if c["role"] == "aggregate" and c["type"] in NUMERIC
        ]
        async with session.get(f"{url}{base}?limit={SAMPLE}", headers=headers) as response:
            response.raise_for_status()
            rows = (await response.json())["rows"]
        for key in view["keys"]:
            values = sorted({str(r[key]) for r in rows if r.get(key) is not None})[:VALUES]
            if values:
                param = f"{name}__{key}"
                params[param] = [urllib.parse.quote(v, safe="") for v in values]
                templates.append(_t("point", name, 4, f"{base}?{key}={{{param}}}"))
        for column in numeric:
            templates.append(_t("top", name, 2, f"{base}?order_by=-{column}&limit=10"))
        if view["keys"]:
            # over all time where windows tile it; a hop view's windows overlap and cannot be
            # re-bucketed (a 400), so its rollup keeps them
            over_all = view["window"] is not None and view["window"]["kind"] != "hop"
            rollup = "bucket=all&group_by=" if over_all else "group_by="
            templates.append(_t("rollup", name, 1, f"{base}?{rollup}"))
        metric = view.get("chart") or (numeric[0] if numeric else None)
        if view["window"] and metric is not None:
            split = f"&split_by={view['keys'][0]}&top=5" if view["keys"] else ""
            series = f"{base}/series?metric={metric}&from={{hour_ago}}&to={{now_minute}}{split}"
            templates.append(_t("series", name, 2, series))
        templates.append(_t("csv", name, 1, f"{base}?format=csv&limit=100"))
    return {"templates": templates, "params": params}


def _t(kind: str, view: str, weight: int, path: str) -> dict[str, Any]:
    return {"weight": weight, "path": path, "kind": f"{kind} {view}"}


def toml(scenario: dict[str, Any]) -> str:
    """A scenario (name, duration, connections, [query]) as the TOML a scenario file holds."""
    lines = [
        "# A query mix derived from the server's views by tallyd bench run --auto; edit freely.",
        f'name = "{scenario["name"]}"',
        f'duration = "{scenario["duration"]}"',
        f"connections = {scenario['connections']}",
        "",
        "[query]",
        f"rate = {scenario['query']['rate']}",
        "templates = [",
    ]
    for t in scenario["query"]["templates"]:
        lines.append(
            f'  {{ weight = {t["weight"]}, path = "{t["path"]}" }},  # {t.get("kind", "")}'
        )
    lines.append("]")
    lines.append("")
    lines.append("[query.params]")
    for name, values in scenario["query"]["params"].items():
        shown = ", ".join(f'"{v}"' for v in values)
        lines.append(f"{name} = [{shown}]")
    return "\n".join(lines) + "\n"
