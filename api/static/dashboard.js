/* The dashboard: every view as a live table (and a live chart when it has a time window), all of
 * them over ONE stream, GET /v1/live. A browser opens at most six connections per host over
 * HTTP/1.1; a stream per table and chart once left every other request of the page queued
 * behind them.
 *
 * The page exposes window.tallyd for tests and embedding apps: updates[view] = { table, chart }
 * (answers and changes drawn), charts[view] (what tallydChart observes), streams (opened).
 */
(function () {
  "use strict";
  const views = JSON.parse(document.getElementById("config").textContent);
  const live = JSON.parse(document.getElementById("live").textContent);
  const status = document.getElementById("status");
  const observed = window.tallyd = {
    views: views.map((v) => v.name), updates: {}, charts: {}, streams: 0 };
  const targets = [];  // by subscription index: the table or chart its messages update

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text != null) node.textContent = text;
    if (cls) node.className = cls;
    return node;
  }

  function fresh(f) {
    if (!f) return "";
    const at = f.watermark ? f.watermark.replace("T", " ").replace(/\.\d+Z$/, " UTC") : "\u2013";
    const text = "data up to " + at + " · " + f.position;
    if (!f.backfilling) return text;
    const b = f.backfill;  // a view added or changed live, still reading its history
    return text + " · filling from history: " + tallydNumber(b.read) + " of " +
      tallydNumber(b.total) + " records" + (b.failed ? " (stopped: " + b.failed + ")" : "");
  }

  const { cell } = tallydFormat;  // chart.js: one cell format, one row order for every page

  function rowsTable(box, v) {
    const state = tallydFormat.rowsState(v.newest_first);
    const holder = box.appendChild(el("div", null, "rows"));
    const note = box.appendChild(el("div", "", "note"));

    function render(freshness) {
      const t = el("table");
      const head = t.createTHead().insertRow();
      state.columns.forEach((c) => head.appendChild(el("th", c.name,
        c.role === "aggregate" && c.type !== "array" ? "number" : "")));
      const body = t.createTBody();
      state.rows.slice(0, v.limit).forEach((r) => {
        const row = body.insertRow();
        state.columns.forEach((c) => {
          const shown = cell(r[c.name], c), td = row.insertCell();
          td.textContent = shown.text;
          if (shown.cls) td.className = shown.cls;
          if (shown.title) td.title = shown.title;
        });
      });
      holder.replaceChildren(t);
      const n = state.rows.length;  // the page asks for one row more than it shows
      note.textContent = (n > v.limit ? v.limit + " of more rows" + (v.newest_first
        ? ", newest first" : "") : n === 0 ? "no rows yet" : n + (n === 1 ? " row" : " rows"))
        + (v.live.table == null ? " · not live" : "");
      box.querySelector(".fresh").textContent = fresh(freshness);
      observed.updates[v.name].table += 1;
    }

    function answer(a) {
      if (a.error) { note.textContent = a.error.message; return; }
      state.answer(a);
      render(a.freshness);
    }

    function change(c) {
      state.change(c);
      render(c.freshness);
    }

    return { answer, change };
  }

  function chart(box, v) {
    const watch = observed.charts[v.name] = {};
    return tallydChart(box.appendChild(el("div", null, "chart")), {
      metric: v.metric, type: "line", observed: watch, height: () => 240,
      onDraw: () => { observed.updates[v.name].chart += 1; },
    });
  }

  // Copy-paste embeds of the view: iframes (chart, tile, table), the same as web components
  // (README "Charts in your app"), and its query URL.
  function embed(box, v) {
    const links = box.appendChild(el("details"));
    links.appendChild(el("summary", "embed and query"));
    const frame = (url, height) => '<iframe src="' + location.origin + url + '" width="100%" ' +
      'height="' + height + '" style="border:0"></iframe>';
    if (v.chart) links.appendChild(el("pre", frame(v.chart, 320)));
    if (v.tile) links.appendChild(el("pre", frame(v.tile, 170)));
    links.appendChild(el("pre", frame(v.table, 320)));
    const attrs = (o) => Object.entries(o).filter(([, x]) => x != null)
      .map(([k, x]) => " " + k + '="' + x + '"').join("");
    const parts = ['<script src="' + location.origin + '/assets/tallyd.js"></script>'];
    if (v.metric) {
      parts.push("<tallyd-chart" + attrs({ view: v.name, metric: v.metric, "split-by": v.split_by,
        top: v.split_by ? 5 : null }) + "></tallyd-chart>");
      parts.push("<tallyd-tile" + attrs({ view: v.name, metric: v.metric }) + "></tallyd-tile>");
    }
    parts.push("<tallyd-table" + attrs({ view: v.name, limit: v.limit }) + "></tallyd-table>");
    links.appendChild(el("pre", parts.join("\n")));
    links.appendChild(el("pre", location.origin + v.query));
  }

  // A part the stream has no room for (max_live_subscriptions) is read once, and says so.
  function attach(index, target, url) {
    if (index != null) { targets[index] = target; return; }
    fetch(url).then((r) => r.json()).then((a) => target.answer(a));
  }

  function section(v) {
    const box = el("section", null, "view");
    box.id = "view-" + v.name;
    box.append(el("h2", v.name), el("div", v.description || "", "meta"), el("div", "", "meta fresh"));
    observed.updates[v.name] = v.metric ? { table: 0, chart: 0 } : { table: 0 };
    if (v.metric) attach(v.live.chart, chart(box, v), v.series);
    attach(v.live.table, rowsTable(box, v), v.rows);
    embed(box, v);
    return box;
  }

  function follow(url) {
    const stream = new EventSource(url);
    observed.streams += 1;
    const route = (kind) => (e) => {
      const message = JSON.parse(e.data);
      targets[message.s][kind](message.data);
    };
    stream.addEventListener("answer", route("answer"));
    stream.addEventListener("change", route("change"));
    stream.onopen = () => { status.textContent = "live"; status.className = ""; };
    stream.onerror = () => { status.textContent = "reconnecting…"; status.className = "down"; };
  }

  const root = document.getElementById("views");
  views.forEach((v) => root.appendChild(section(v)));
  if (live) follow(live); else status.textContent = views.length ? "not live" : "no views";
})();
