/* The dashboard: every view as a live table (and a live chart when it has a time window), made of
 * the same web components a customer embeds (tallyd.js): <tallyd-table>, <tallyd-chart>. They
 * share ONE live stream for the whole page — through tallyd.js's SharedWorker, with every other
 * tallyd page of the browser — since a browser opens at most six connections per host, and a
 * stream per table and chart once left the page's other requests queued behind them.
 *
 * The page exposes window.tallyd for tests and embedding apps: updates[view] = { table, chart }
 * (answers and changes drawn), charts[view] (what the chart observes).
 */
(function () {
  "use strict";
  const views = JSON.parse(document.getElementById("config").textContent);
  const status = document.getElementById("status");
  const observed = window.tallyd = { views: views.map((v) => v.name), updates: {}, charts: {} };
  const { number } = tallydFormat;

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text != null) node.textContent = text;
    if (cls) node.className = cls;
    return node;
  }

  function fresh(f) {
    if (!f) return "";
    const at = f.watermark ? tallydFormat.when(f.watermark) : "\u2013";
    const text = "data up to " + at + " · " + f.position;
    if (!f.backfilling) return text;
    const b = f.backfill;  // a view added or changed live, still reading its history
    return text + " · filling from history: " + number(b.read) + " of " +
      number(b.total) + " records" + (b.failed ? " (stopped: " + b.failed + ")" : "");
  }

  function component(name, attributes) {
    const node = document.createElement(name);
    Object.entries(attributes).forEach(([k, v]) => { if (v != null) node.setAttribute(k, v); });
    return node;
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

  function section(v) {
    const box = el("section", null, "view");
    box.id = "view-" + v.name;
    const freshness = el("div", "", "meta fresh");
    box.append(el("h2", v.name), el("div", v.description || "", "meta"), freshness);
    const counts = observed.updates[v.name] = v.metric ? { table: 0, chart: 0 } : { table: 0 };
    const shared = { view: v.name, token: v.token, bare: "" };  // the box has its own title
    if (v.metric) {
      const chart = box.appendChild(component("tallyd-chart", {
        ...shared, metric: v.metric, "split-by": v.split_by, top: v.split_by ? 5 : null,
        height: 240 }));
      chart.className = "chart";
      observed.charts[v.name] = chart.observed;
      chart.addEventListener("tallyd-update", () => { counts.chart += 1; });
    }
    const table = box.appendChild(component("tallyd-table", { ...shared, limit: v.limit }));
    table.className = "table";
    table.addEventListener("tallyd-update", (e) => {
      counts.table += 1;
      freshness.textContent = fresh(e.detail.freshness);
    });
    table.addEventListener("tallyd-status", (e) => {  // the page's one stream, as it goes
      const { state, why } = e.detail;
      status.textContent = state === "live" ? "live" : state === "error" ? why : "reconnecting…";
      status.className = state === "live" ? "" : "down";
    });
    embed(box, v);
    return box;
  }

  const root = document.getElementById("views");
  views.forEach((v) => root.appendChild(section(v)));
  if (!views.length) status.textContent = "no views";
})();
