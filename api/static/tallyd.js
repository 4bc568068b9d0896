/* tallyd's embeds as web components, for pages that would rather not use iframes:
 *
 *   <script src="https://tallyd.example.com/assets/tallyd.js"></script>
 *   <tallyd-chart view="revenue_by_country" metric="revenue" split-by="country" top="5"
 *                 type="area" stack unit="EUR"></tallyd-chart>
 *   <tallyd-tile  view="revenue_by_country" metric="orders" bucket="1h"></tallyd-tile>
 *   <tallyd-top   view="revenue_by_country" metric="revenue" by="country" from="-1h"></tallyd-top>
 *   <tallyd-table view="revenue_by_country" limit="10"></tallyd-table>
 *
 * Each takes its endpoint's parameters as attributes (split_by as split-by, order_by as
 * order-by; group-key filters as filter="country=FR&country=DE"), `token` (an embed token) and
 * `host` (default: where this script came from); `bare` leaves out the title and status line (a
 * page that shows its own). No dependency but tallyd's own /assets/; no
 * CDN. Themable with CSS variables (--tallyd-bg, --tallyd-fg, --tallyd-muted, --tallyd-grid,
 * --tallyd-accent, --tallyd-up, --tallyd-down, --tallyd-font), light or dark after the reader's
 * prefers-color-scheme unless theme="light|dark". Each keeps an aria-label with its latest
 * values, and `element.observed` (updates drawn, values shown) for tests and apps.
 *
 * Live, all of a page's embeds from one host share ONE stream (/v1/live): a browser opens at
 * most six connections per host, so a stream per embed would stall a page of ten. The iframe
 * pages tallyd serves itself (/chart, /tile, /top, /table) go further: being of one origin, they
 * share one stream across every frame and tab through a SharedWorker — this same file.
 */
(function () {
  "use strict";
  // Subscriptions per stream: the server's default max_live_subscriptions; a server that allows
  // fewer says so when it refuses a stream, and the hub splits its subscriptions accordingly.
  const PER_STREAM = 32;

  // ---- the live hub: subscriptions in, one /v1/live stream (per host and token) out ---------
  // target: { answer(full), change(diff), status(state, why) }. Subscriptions are kept in groups
  // of at most perStream, a stream each; adding or leaving reopens only the group it changed
  // (debounced: a page's embeds connect together, over one stream), and each of its
  // subscriptions gets a full answer again. A refused stream is diagnosed: a server that allows
  // fewer subscriptions a stream has the groups split; one refused subscription is failed alone
  // (the rest reopened without it); a server restarting, overloaded or unreachable is retried,
  // backing off to 30 s.
  function Hub(base, token) {
    const groups = [];  // { subs: [{ question, target, group, left }], stream, dirty, retry }
    let timer = null, perStream = PER_STREAM;
    const stats = { opened: 0 };
    const URL_ROOM = 6000;  // a stream's request line stays well under aiohttp's 8 KiB

    function newGroup(subs) {
      const group = { subs, stream: null, dirty: true, retry: 0, dead: false, timer: null };
      subs.forEach((sub) => { sub.group = group; });
      groups.push(group);
      return group;
    }

    const length = (subs) => subs.reduce((n, s) => n + s.question.length * 1.3 + 3, 0);

    function add(question, target) {
      const sub = { question, target, group: null, left: false };
      const group = groups.find((g) => g.subs.length < perStream &&
                                       length(g.subs) + length([sub]) < URL_ROOM) || newGroup([]);
      group.subs.push(sub);
      sub.group = group;
      touch(group);
      return () => {  // its group is where it is now (a regroup moves it)
        sub.left = true;
        const at = sub.group.subs.indexOf(sub);
        if (at >= 0) { sub.group.subs.splice(at, 1); touch(sub.group); }
      };
    }

    function touch(group) {
      group.dirty = true;
      clearTimeout(timer);
      timer = setTimeout(flush, 25);
    }

    function flush() {
      groups.filter((g) => g.dirty).forEach((g) => { g.dirty = false; reopen(g); });
    }

    function close(group) {
      if (group.stream) group.stream.close();
      group.stream = null;
      clearTimeout(group.timer);
    }

    function reopen(group) {
      close(group);
      if (group.dead) return;
      if (!group.subs.length) {
        group.dead = true;
        const at = groups.indexOf(group);
        if (at >= 0) groups.splice(at, 1);
        return;
      }
      group.stream = open(group, group.subs.slice());
    }

    function regroup() {  // the server takes fewer a stream: split every group anew
      const all = groups.flatMap((g) => { close(g); g.dead = true; return g.subs; });
      groups.length = 0;
      for (let i = 0; i < all.length; i += perStream) newGroup(all.slice(i, i + perStream));
      flush();
    }

    function open(group, subs) {
      const query = subs.map((s) => "s=" + encodeURIComponent(s.question));
      if (token) query.push("token=" + encodeURIComponent(token));
      const url = base + "/v1/live?" + query.join("&");
      const stream = new EventSource(url);
      stats.opened += 1;
      const live = () => subs.filter((s) => !s.left);  // one that left hears nothing more
      const route = (kind) => (e) => {
        const message = JSON.parse(e.data);
        const sub = subs[message.s];
        if (sub && !sub.left) sub.target[kind](message.data);
      };
      stream.addEventListener("answer", route("answer"));
      stream.addEventListener("change", route("change"));
      stream.onopen = () => { group.retry = 0; live().forEach((s) => s.target.status("live")); };
      stream.onerror = () => {
        if (stream.readyState !== EventSource.CLOSED) {  // the browser reconnects by itself
          live().forEach((s) => s.target.status("reconnecting"));
          return;
        }
        diagnose(url).then((d) => {
          if (group.stream !== stream) return;  // reopened meanwhile: not this one's to say
          const error = d.error || {};
          const fewer = error.param === "s" && /give 1 to (\d+) subscriptions/.exec(error.message);
          const bad = error.param === "s" ? subs[error.index] : undefined;
          if (fewer && Number(fewer[1]) > 0 && Number(fewer[1]) < perStream) {
            perStream = Number(fewer[1]);
            regroup();
          } else if (bad && d.status < 500) {  // one refused subscription fails alone
            if (!bad.left) bad.target.status("error", error.message);
            const at = group.subs.indexOf(bad);
            if (at >= 0) group.subs.splice(at, 1);
            reopen(group);
          } else if (d.retry || d.status >= 500 || d.status === 429) {
            live().forEach((s) => s.target.status("reconnecting"));
            const wait = Math.max(Number(d.retryAfter) * 1000 || 0,
                                  Math.min(30000, 1000 * 2 ** group.retry++));
            group.timer = setTimeout(() => { if (group.stream === stream) reopen(group); }, wait);
          } else {
            live().forEach((s) => s.target.status("error", error.message || "not live"));
          }
        });
      };
      return stream;
    }

    return { add, stats };
  }

  // Why a stream was refused: its status and error, read without keeping a stream that now
  // answers (it is aborted at its headers: then, and on a network error, try again).
  function diagnose(url) {
    const ctl = new AbortController();
    const slow = setTimeout(() => ctl.abort(), 10000);  // no answer in 10 s: try again later
    return fetch(url, { signal: ctl.signal }).then((r) => {
      clearTimeout(slow);
      if (r.ok) { ctl.abort(); return { retry: true }; }
      const retryAfter = r.headers.get("Retry-After");
      return r.json().catch(() => ({})).then((a) => ({ status: r.status, error: a.error,
                                                         retryAfter }));
    }).catch(() => ({ retry: true }));
  }

  const hubKey = (base, token) => base + "|" + (token || "");  // one hub per host and token

  if (typeof window === "undefined") {  // this file as the SharedWorker of tallyd's own pages
    const hubs = new Map();
    self.onconnect = (event) => {
      const port = event.ports[0];
      const mine = new Map();
      port.postMessage({ hello: true });  // the page knows its worker runs
      port.onmessage = ({ data: m }) => {
        if (m.add != null) {
          const key = hubKey(m.base, m.token);
          if (!hubs.has(key)) hubs.set(key, Hub(m.base, m.token));
          const send = (kind) => (...data) => port.postMessage({ id: m.add, kind, data });
          mine.set(m.add, hubs.get(key).add(m.question, {
            answer: send("answer"), change: send("change"), status: send("status") }));
        } else if (m.remove != null) {
          if (mine.has(m.remove)) mine.get(m.remove)();
          mine.delete(m.remove);
        } else if (m.bye) {
          mine.forEach((leave) => leave());
          mine.clear();
        }
      };
      port.start();
    };
    return;
  }

  const script = document.currentScript;
  const here = script && script.src ? new URL(script.src, location.href) : null;
  const origin = here ? here.origin : location.origin;
  const version = here ? here.search : "";

  let worker = null;
  const routes = new Map();  // id -> { base, token, question, target, leave? }
  let nextRoute = 0, heard = false, local = false;

  // Where a SharedWorker cannot run or stays silent (some browsers, some privacy settings), the
  // page's subscriptions move to a stream of its own: live still, only not shared across frames.
  function fallBack() {
    if (local) return;
    local = true;
    if (worker) worker.port.postMessage({ bye: true });  // its copies of these go
    routes.forEach((r) => { r.leave = localHub(r.base, r.token).add(r.question, r.target); });
  }

  function sharedHub(base, token) {
    if (!worker) {
      try {
        worker = new SharedWorker(here.href, { name: "tallyd-live" });
      } catch (err) {
        local = true;
      }
      if (worker) {
        worker.onerror = fallBack;
        worker.port.onmessage = ({ data: m }) => {
          heard = true;
          if (m.hello) return;
          const route = routes.get(m.id);
          if (route && !local) route.target[m.kind](...m.data);
        };
        worker.port.start();
        setTimeout(() => { if (!heard) fallBack(); }, 5000);
        window.addEventListener("pagehide", (e) => {  // kept in the back/forward cache: stay
          if (!e.persisted) worker.port.postMessage({ bye: true });
        });
      }
    }
    return {
      add(question, target) {
        const id = nextRoute++;
        const route = { base, token, question, target };
        routes.set(id, route);
        if (local) route.leave = localHub(base, token).add(question, target);
        else worker.port.postMessage({ add: id, base, token, question });
        return () => {
          routes.delete(id);
          if (route.leave) route.leave();
          else worker.port.postMessage({ remove: id });
        };
      },
    };
  }

  const locals = new Map(), shared = new Map();
  function localHub(base, token) {  // one stream (per 32 subscriptions) for the whole page
    const key = hubKey(base, token);
    if (!locals.has(key)) locals.set(key, Hub(base, token));
    return locals.get(key);
  }

  function hubFor(base, token) {
    if (!(here && base === location.origin && typeof SharedWorker === "function")) {
      return localHub(base, token);
    }
    const key = hubKey(base, token);
    if (!shared.has(key)) shared.set(key, sharedHub(base, token));
    return shared.get(key);
  }

  // ---- assets: chart.js (formats, row and series state) for all, uPlot for charts ----------
  const loading = {};
  function load(name) {
    if (!loading[name]) {
      loading[name] = new Promise((resolve, reject) => {
        const tag = document.createElement("script");
        tag.src = origin + "/assets/" + name + version;
        tag.onload = resolve;
        tag.onerror = () => reject(new Error("could not load " + tag.src));
        document.head.appendChild(tag);
      });
    }
    return loading[name];
  }
  const needs = {
    format: () => (window.tallydFormat ? Promise.resolve() : load("chart.js")),
    chart: () => (window.uPlot ? Promise.resolve() : load("uPlot.iife.min.js"))
      .then(() => (window.tallydChart ? null : load("chart.js"))),
  };

  const STYLE = `
    :host { display: block; box-sizing: border-box; padding: 10px 12px;
      --_bg: var(--tallyd-bg, #ffffff); --_fg: var(--tallyd-fg, #1f2328);
      --_muted: var(--tallyd-muted, #656d76); --_grid: var(--tallyd-grid, #d0d7de);
      --_accent: var(--tallyd-accent, #2f81f7); --_up: var(--tallyd-up, #1a7f37);
      --_down: var(--tallyd-down, #cf222e);
      background: var(--_bg); color: var(--_fg);
      font: 13px/1.4 var(--tallyd-font, system-ui, -apple-system, "Segoe UI", sans-serif); }
    @media (prefers-color-scheme: dark) { :host(:not([theme=light])) {
      --_bg: var(--tallyd-bg, #0d1117); --_fg: var(--tallyd-fg, #e6edf3);
      --_muted: var(--tallyd-muted, #8d96a0); --_grid: var(--tallyd-grid, #30363d);
      --_up: var(--tallyd-up, #3fb950); --_down: var(--tallyd-down, #f85149); } }
    :host([theme=dark]) { --_bg: var(--tallyd-bg, #0d1117); --_fg: var(--tallyd-fg, #e6edf3);
      --_muted: var(--tallyd-muted, #8d96a0); --_grid: var(--tallyd-grid, #30363d);
      --_up: var(--tallyd-up, #3fb950); --_down: var(--tallyd-down, #f85149); }
    :host([bare]) { padding: 0; } :host([bare]) .title, :host([bare]) .status { display: none; }
    .title { font-weight: 600; font-size: 14px; }
    .status { color: var(--_muted); font-size: 11px; margin-bottom: 4px; }
    .status.error { color: var(--_down); }
    .value { font-size: 32px; font-weight: 600; font-variant-numeric: tabular-nums; }
    .unit { font-size: 16px; color: var(--_muted); font-weight: 400; }
    .delta { font-size: 13px; } .delta.up { color: var(--_up); } .delta.down { color: var(--_down); }
    svg.spark { width: 100%; height: 36px; display: block; margin-top: 6px; }
    .bars { display: grid; grid-template-columns: minmax(4em, max-content) 1fr max-content;
      gap: 4px 8px; align-items: center; }
    .bar { height: 16px; background: var(--_accent); border-radius: 2px; min-width: 1px; }
    .num { text-align: right; font-variant-numeric: tabular-nums; }
    table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
    th, td { padding: 3px 8px; border-bottom: 1px solid var(--_grid); text-align: left;
      white-space: nowrap; }
    th button { font: inherit; font-weight: 600; color: inherit; background: none; border: 0;
      padding: 0; cursor: pointer; }
    td.number, th.number { text-align: right; } td.none { color: var(--_muted); }
    td.list { white-space: normal; min-width: 16em; }
    .note { color: var(--_muted); font-size: 12px; margin-top: 4px; }
    .u-legend { color: var(--_fg); }`;

  const DURATIONS = [[604800000, "week"], [86400000, "day"], [3600000, "hour"],
                     [60000, "minute"], [1000, "second"]];
  function period(ms) {  // 3600000 -> "hour", 300000 -> "5 minutes"
    for (const [size, name] of DURATIONS) {
      if (ms % size === 0) return ms === size ? name : ms / size + " " + name + "s";
    }
    return ms + " ms";
  }

  // ---- what every embed shares: attributes -> query, first answer, live, status, summary -----
  // (a summary, read out by screen readers, gives whole numbers: "10,000 EUR", not "10K EUR")
  class Embed extends HTMLElement {
    constructor() {
      super();
      this.observed = { updates: 0, error: null, status: "loading" };
      this.cleanups = [];
      this.attachShadow({ mode: "open" });
    }

    connectedCallback() {
      const root = this.shadowRoot;
      root.innerHTML = "";
      root.append(Object.assign(document.createElement("style"), { textContent: STYLE }));
      this.$title = this.part("div", "title");
      this.$title.textContent = this.getAttribute("label") || this.defaultLabel();
      this.$status = this.part("div", "status");
      this.$status.textContent = "loading\u2026";
      if (!this.hasAttribute("role")) this.setAttribute("role", "figure");
      // A generation per start: an earlier start still loading (its attributes changed, or the
      // element left) stops at its next step instead of subscribing or drawing.
      const gen = this.gen = (this.gen || 0) + 1;
      this.begin().catch((err) => { if (gen === this.gen) this.status("error", err.message); });
    }

    disconnectedCallback() {
      this.gen = (this.gen || 0) + 1;
      (this.cleanups || []).forEach((undo) => undo());  // its subscriptions too  // listeners, charts: nothing kept alive
      this.cleanups = [];
    }

    // After an await in begin(): go on only if this start is still the element's.
    check(gen) {
      if (gen !== this.gen) throw new Error("superseded");
    }

    static get observedAttributes() {
      return ["view", "metric", "by", "column", "bucket", "split-by", "top", "filter", "from",
              "to", "limit", "order-by", "period", "type", "stack", "unit", "token", "host", "tz",
              "fill", "columns", "group-by", "interval", "label", "height", "in-progress"];
    }

    attributeChangedCallback(name, before, after) {  // asked another question: start again
      if (before !== after && this.isConnected && this.$status) {
        this.disconnectedCallback();
        this.connectedCallback();
      }
    }

    part(tag, cls) {
      const node = document.createElement(tag);
      if (cls) node.className = cls;
      return this.shadowRoot.appendChild(node);
    }

    attr(name, fallback) {
      const v = this.getAttribute(name);
      return v == null || v === "" ? fallback : v;
    }

    get view() { return this.attr("view", ""); }
    get base() { return this.attr("host", origin).replace(/\/+$/, ""); }

    // The endpoint's parameters from attributes (names with - for _), and the filter attribute.
    params(names, extra) {
      const p = new URLSearchParams(this.attr("filter", ""));
      names.forEach((n) => {
        const v = this.getAttribute(n);
        if (v != null && v !== "") p.set(n.replace(/-/g, "_"), v);
      });
      Object.entries(extra || {}).forEach(([k, v]) => { if (v != null) p.set(k, v); });
      return p;
    }

    url(path, params) {
      const p = new URLSearchParams(params);
      const token = this.getAttribute("token");
      if (token) p.set("token", token);
      return this.base + "/v1/views/" + encodeURIComponent(this.view) + path + "?" + p;
    }

    async read(path, params) {
      if (!this.view) throw new Error("the view attribute is required");
      const gen = this.gen;
      const answer = await (await fetch(this.url(path, params))).json();
      this.check(gen);
      if (answer.error) throw new Error(answer.error.message);
      return answer;
    }

    async ready(need) {  // the scripts this element draws with, then: still this start?
      const gen = this.gen;
      await need();
      this.check(gen);
    }

    // The live question (as /v1/live takes it) and where its messages go.
    follow(kind, params, target) {  // messages of an earlier start are dropped
      const q = new URLSearchParams(params);
      if (kind === "series") q.set("kind", "series");
      if (this.getAttribute("interval")) q.set("interval", this.getAttribute("interval"));
      const question = "/v1/views/" + encodeURIComponent(this.view) + "/subscribe?" + q;
      const gen = this.gen, mine = () => gen === this.gen;
      this.cleanups.push(hubFor(this.base, this.getAttribute("token")).add(question, {
        answer: (a) => { if (mine()) { target.answer(a); this.drawn(); } },
        change: (c) => { if (mine()) { target.change(c); this.drawn(); } },
        status: (state, why) => { if (mine()) this.status(state, why); },
      }));
    }

    drawn() {
      if (!this.chart) this.observed.updates += 1;  // a chart's own drawing counts its updates
      const f = this.freshness();
      this.observed.freshness = f;
      if (this.observed.status !== "error") {
        this.$status.textContent = (this.observed.status === "live" ? "live" : "\u2026") +
          (f && f.watermark ? " \u00b7 data up to " + tallydFormat.when(f.watermark) : "");
      }
      const summary = this.summary();
      this.observed.summary = summary;
      this.setAttribute("aria-label", this.$title.textContent + ": " + summary);
      this.dispatchEvent(new CustomEvent("tallyd-update", { detail: this.observed }));
    }

    status(state, why) {
      this.observed.status = state;
      this.dispatchEvent(new CustomEvent("tallyd-status", { detail: { state, why } }));
      if (state === "error") {
        this.observed.error = why;
        this.$status.textContent = why;
        this.$status.className = "status error";
        this.setAttribute("aria-label", this.$title.textContent + ": " + why);
      } else {
        this.$status.className = "status";
        this.$status.textContent = state === "live" ? "live" : "reconnecting\u2026";
      }
    }

    unit() { const u = this.attr("unit", ""); return u ? " " + u : ""; }
  }

  // ---- <tallyd-chart>: the series chart (chart.js), in-progress buckets marked ---------------
  const SERIES = ["metric", "bucket", "tz", "from", "to", "split-by", "top", "fill"];

  class TallydChart extends Embed {
    defaultLabel() { return this.view + " \u00b7 " + this.attr("metric", ""); }

    async begin() {
      await this.ready(needs.chart);
      const css = this.shadowRoot.appendChild(document.createElement("link"));
      css.rel = "stylesheet";
      css.href = origin + "/assets/uPlot.min.css" + version;
      const holder = this.part("div", "plot");
      const style = getComputedStyle(this);
      const asked = this.attr("height", "260");  // pixels, or "fill": the window's height
      const height = asked === "fill" ? () => window.innerHeight - 70 : () => Number(asked) || 260;
      this.chart = tallydChart(holder, {
        metric: this.attr("metric", ""), unit: this.attr("unit", ""),
        type: this.attr("type", "line"), inProgress: this.attr("in-progress", "show"),
        stack: this.hasAttribute("stack") && this.getAttribute("stack") !== "false",
        observed: this.observed, tz: this.attr("tz"),
        colors: () => ({ fg: style.getPropertyValue("--_fg").trim(),
                         grid: style.getPropertyValue("--_grid").trim() }),
        height: () => Math.max(120, height()),
        onDraw: (f) => { this.fresh = f; },
      });
      const chart = this.chart;
      const scheme = matchMedia("(prefers-color-scheme: dark)");
      const restyle = () => chart.restyle();  // the reader's scheme changed: the axes follow
      scheme.addEventListener("change", restyle);
      this.cleanups.push(() => scheme.removeEventListener("change", restyle), chart.destroy);
      const params = this.params(SERIES);
      const first = await this.read("/series", params);
      if (!this.chart.drawn()) { this.chart.answer(first); this.drawn(); }
      this.follow("series", params, this.chart);
    }

    freshness() { return this.fresh; }

    summary() {
      const o = this.observed;
      if (!o.latest || !o.latest.length) return "no data yet";
      const at = new Date(o.latestX).toISOString().slice(0, 16).replace("T", " ") + " UTC";
      return o.latest.map(([name, v]) => name + " " + tallydFormat.number(v) + this.unit())
        .join(", ") + " (" + at + ")";
    }
  }

  // A series answer the tile may change in place (applySeries) without touching the message's.
  const ownSeries = (a) => ({ ...a, series: a.series.map((s) => ({ ...s })) });

  // ---- <tallyd-tile>: one number, this period or the last, its change, a sparkline -----------
  class TallydTile extends Embed {
    defaultLabel() { return this.attr("metric", "") || this.view; }

    async begin() {
      await this.ready(needs.format);
      this.$value = this.part("div", "value");
      this.$delta = this.part("div", "delta");
      this.$spark = this.part("div", "sparkline");
      const params = this.params(["metric", "bucket", "tz", "fill"]);
      this.state = null;
      this.fine = null;
      const target = {
        answer: (a) => { this.state = { ...ownSeries(a), completeUntil: a.complete_until_ms };
                         this.render(); },
        change: (c) => { tallydFormat.applySeries(this.state, c); this.render(); },
      };
      target.answer(await this.read("/series", params));
      this.drawn();
      this.follow("series", params, target);
      if (this.attr("period", "current") === "last") return;
      try {
        await this.likeForLike();
      } catch (err) {  // the tile stands without it: the previous value beside, no %
        if (err.message === "superseded") throw err;
        this.fine = null;
      }
    }

    // A count or a sum of a period still filling is compared with the same part of the period
    // before ("vs the same point of the previous hour"), read from the view's own finer windows
    // over the last two periods: a part of an hour against a whole one would fall every hour.
    async likeForLike() {
      const columns = (await columnsOf(this)).all;
      const column = columns.find((c) => c.name === this.attr("metric"));
      if (!column || !["count", "sum"].includes(column.aggregate)) return;
      const finest = await this.read("/series", this.params(["metric", "tz"]));
      const window = finest.bucket_ms, coarse = this.state.bucket_ms;
      if (!(coarse > window)) return;
      // a multiple of the view's window, at most ~4,000 points over the two periods
      const fine = window * Math.ceil((2 * coarse) / window / 4000);
      this.fineStep = fine;
      const params = this.params(["metric", "tz"], { bucket: fine + "ms",
                                                     from: "-" + 2 * coarse + "ms" });
      const target = {
        answer: (a) => { this.fine = ownSeries(a); this.render(); },
        change: (c) => { tallydFormat.applySeries(this.fine, c); this.render(); },
      };
      target.answer(await this.read("/series", params));
      this.follow("series", params, target);
    }

    // The previous period up to the point the newest has reached (the newest event's time):
    // its finer windows that start by then. None without them, or before the first event.
    previousSoFar() {
      const s = this.state, f = this.fine, i = s.x.length - 1;
      const newest = s.freshness && s.freshness.watermark_ms;
      if (!f || !f.series.length || i < 1 || newest == null) return null;
      const start = s.x[i - 1], elapsed = newest - s.x[i];
      if (elapsed < 0 || elapsed >= s.bucket_ms) return null;
      // Whole finer windows before the point, and the part of the one holding it (as if its
      // events were spread evenly): the same span as the newest period's, no window more.
      const values = f.series[0].values, step = this.fineStep, point = start + elapsed;
      return f.x.reduce((n, x, j) => {
        if (x < start || x >= point) return n;
        return n + (values[j] || 0) * Math.min(1, (point - x) / step);
      }, 0);
    }

    freshness() { return this.state && this.state.freshness; }

    // The newest bucket ("so far" while it fills) with period="current" (the default), or the
    // newest final one with period="last"; the change against the bucket before it.
    figures() {
      const s = this.state, values = s.series.length ? s.series[0].values : [];
      const final = (i) => s.completeUntil != null && s.x[i] + s.bucket_ms <= s.completeUntil;
      let i = values.length - 1;
      if (this.attr("period", "current") === "last") while (i >= 0 && !final(i)) i -= 1;
      const value = i >= 0 ? values[i] : null;
      const before = i >= 1 ? values[i - 1] : null;
      return { i, value, before, filling: i >= 0 && !final(i), values: values.slice(0, i + 1) };
    }

    render() {
      const f = this.figures(), name = period(this.state.bucket_ms);
      const word = this.attr("period", "current") === "last" ? "last " + name
        : "this " + name + (f.filling ? " so far" : "");
      this.$value.replaceChildren(document.createTextNode(f.value == null ? "\u2013"
        : tallydFormat.si(f.value)));
      if (this.attr("unit")) {
        this.$value.append(Object.assign(document.createElement("span"),
          { className: "unit", textContent: this.unit() }));
      }
      this.$title.textContent = (this.getAttribute("label") || this.defaultLabel()) + " \u00b7 " + word;
      let delta = "", cls = "delta";
      const like = f.filling ? this.previousSoFar() : null;
      this.observed.like = like;
      if (like != null && like !== 0 && f.value != null) {  // like for like: the same part
        const pct = (100 * (f.value - like)) / Math.abs(like);
        delta = (pct >= 0 ? "\u25b2 +" : "\u25bc ") + pct.toFixed(1) +
          " % vs the same point of the previous " + name;
        cls += pct >= 0 ? " up" : " down";
      } else if (f.filling && f.before != null) {  // a part of a period against a whole one: no %
        delta = "previous " + name + ": " + tallydFormat.si(f.before) + this.unit();
      } else if (f.value != null && f.before != null && f.before !== 0) {
        const pct = (100 * (f.value - f.before)) / Math.abs(f.before);
        delta = (pct >= 0 ? "\u25b2 +" : "\u25bc ") + pct.toFixed(1) + " % vs previous " + name;
        cls += pct >= 0 ? " up" : " down";
      } else if (f.before != null) {
        delta = "previous " + name + ": " + tallydFormat.si(f.before) + this.unit();
      }
      this.$delta.textContent = delta;
      this.$delta.className = cls;
      this.observed.value = f.value;
      this.observed.before = f.before;
      this.observed.filling = f.filling;
      this.observed.bucket = this.state.x[f.i];
      this.spark(f.values.slice(-24));
    }

    spark(values) {
      const shown = values.filter((v) => v != null);
      this.observed.spark = values.length;
      if (shown.length < 2) { this.$spark.replaceChildren(); return; }
      const lo = Math.min(...shown), hi = Math.max(...shown), span = hi - lo || 1;
      const points = values.map((v, i) => v == null ? null
        : [(100 * i) / (values.length - 1), 34 - (30 * (v - lo)) / span]).filter(Boolean);
      const ns = "http://www.w3.org/2000/svg";
      const svg = document.createElementNS(ns, "svg");
      svg.setAttribute("class", "spark");
      svg.setAttribute("viewBox", "0 0 100 36");
      svg.setAttribute("preserveAspectRatio", "none");
      svg.setAttribute("aria-hidden", "true");
      const line = document.createElementNS(ns, "polyline");
      line.setAttribute("points", points.map((p) => p.join(",")).join(" "));
      line.setAttribute("fill", "none");
      line.setAttribute("stroke", "var(--_accent)");
      line.setAttribute("stroke-width", "2");
      line.setAttribute("vector-effect", "non-scaling-stroke");
      svg.append(line);
      this.$spark.replaceChildren(svg);
    }

    summary() {
      const o = this.observed;
      return (o.value == null ? "no data" : tallydFormat.number(o.value) + this.unit()) +
        (this.$delta.textContent ? ", " + this.$delta.textContent.replace(/^[\u25b2\u25bc] /, "") : "");
    }
  }

  // Rows of a query, kept live: the table and the ranking both read them.
  async function liveRows(embed, params, newestFirst, draw, orderBy) {
    const state = tallydFormat.rowsState(newestFirst, orderBy);
    const target = {
      answer: (a) => { state.answer(a); draw(state); },
      change: (c) => { state.change(c); draw(state); },
    };
    target.answer(await embed.read("", params));
    embed.drawn();
    embed.follow("rows", params, target);
    return state;
  }

  // What the view's columns are (a first answer of one row): its window column, its keys.
  async function columnsOf(embed) {
    const a = await embed.read("", { limit: 1 });
    const names = (test) => a.columns.filter(test).map((c) => c.name);
    return { window: (a.columns.find((c) => c.role === "window") || {}).name, all: a.columns,
             keys: names((c) => c.role === "key"),
             numbers: names((c) => c.role === "aggregate" && c.type !== "array") };
  }

  // ---- <tallyd-top>: horizontal bars, re-ranked live ----------------------------------------
  // metric= and by= (a group key): the keys ranked by the metric (over from=..to=, or over the
  // whole view); or column= (a top_k aggregate): its items ranked by count, newest window.
  class TallydTop extends Embed {
    defaultLabel() {
      return this.attr("column") || (this.attr("metric", "") + " by " + this.attr("by", ""));
    }

    async begin() {
      await this.ready(needs.format);
      this.$bars = this.part("div", "bars");
      this.$bars.setAttribute("role", "list");
      const limit = Number(this.attr("limit", 10));
      const { window: win, keys, numbers } = await columnsOf(this);
      const column = this.attr("column");
      let params;
      if (column) {
        params = this.params(["from", "to"], {  // every key's items merged: group_by=""
          columns: [win, column].filter(Boolean).join(","), limit: 1, group_by: "",
          order_by: win ? "-" + win : null });
        this.items = (rows) => ((rows[0] || {})[column] || []).map((i) => [String(i.value), i.count]);
      } else {
        const metric = this.attr("metric"), by = this.attr("by");
        if (!metric || !by) throw new Error("give metric= and by=, or column= (a top_k column)");
        if (!keys.includes(by)) {  // named as this element's attributes, not the query's
          throw new Error("by: '" + by + "' is not a group key of " + this.view + "; keys: " +
                          keys.join(", "));
        }
        if (!numbers.includes(metric)) {
          throw new Error("metric: '" + metric + "' is not a numeric aggregate; one of " +
                          numbers.join(", "));
        }
        params = this.params(["from", "to"], {
          group_by: by, order_by: "-" + metric, limit, bucket: win ? "all" : null });
        this.items = (rows) => rows.map((r) => [r[by] == null ? "null" : String(r[by]), r[metric]]);
      }
      this.limit = limit;
      this.rows = await liveRows(this, params, false, (state) => this.render(state),
                                 params.get("order_by"));
    }

    freshness() { return this.rows && this.rows.freshness; }

    render(state) {
      const items = this.items(state.rows).filter(([, v]) => v != null)
        .sort((a, b) => b[1] - a[1] || tallydFormat.compare(a[0], b[0])).slice(0, this.limit);
      const top = Math.max(...items.map(([, v]) => Math.abs(v)), 0) || 1;
      const cells = [];
      items.forEach(([name, v]) => {
        const label = Object.assign(document.createElement("div"), { textContent: name });
        label.setAttribute("role", "listitem");
        const bar = document.createElement("div");
        bar.className = "bar";
        bar.style.width = ((100 * Math.abs(v)) / top).toFixed(2) + "%";
        const num = Object.assign(document.createElement("div"),
          { className: "num", textContent: tallydFormat.si(v) + this.unit() });
        cells.push(label, bar, num);
      });
      if (!items.length) cells.push(Object.assign(document.createElement("div"), { textContent: "no data yet" }));
      this.$bars.replaceChildren(...cells);
      this.observed.items = items;
    }

    summary() {
      const items = this.observed.items || [];
      return items.length ? items.map(([n, v]) => n + " " + tallydFormat.number(v) + this.unit())
        .join(", ") : "no data yet";
    }
  }

  // ---- <tallyd-table>: formatted rows, newest first for windowed views, sortable -------------
  class TallydTable extends Embed {
    defaultLabel() { return this.view; }

    async begin() {
      await this.ready(needs.format);
      this.$table = this.part("div", "rows");
      this.limit = Number(this.attr("limit", 10));
      this.sortBy = null;  // a column the reader clicked: [name, +1 | -1]
      const { window: found, keys } = await columnsOf(this);
      const win = this.attr("bucket") === "all" ? null : found;  // all time: no window column
      const order = this.attr("order-by") || (win ? "-" + win : null);
      this.$note = this.part("div", "note");
      this.newest = win && !this.attr("order-by") ? ", newest first" : "";
      // The rows are told apart by their window and keys: asked for always, shown if asked.
      const asked = this.attr("columns");
      const grouped = this.attr("group-by") == null ? keys : this.attr("group-by").split(",");
      this.shown = asked ? asked.split(",").map((c) => c.trim()) : null;
      const params = this.params(["from", "to", "group-by", "bucket"], {
        limit: this.limit + 1, order_by: order,  // one more than shown: are there more?
        columns: asked ? [...new Set([win, ...grouped, ...this.shown].filter(Boolean))].join(",")
          : null });
      this.rows = await liveRows(this, params, Boolean(win && !this.attr("order-by")),
                                 (state) => this.render(state), order);
    }

    freshness() { return this.rows && this.rows.freshness; }

    render(state) {
      const columns = this.shown ? state.columns.filter((c) => this.shown.includes(c.name))
        : state.columns;
      let rows = state.rows.slice(0, this.limit);
      if (this.sortBy) {
        const [name, dir] = this.sortBy;
        rows = rows.slice().sort((a, b) => dir * tallydFormat.compare(a[name], b[name]));
      }
      const t = document.createElement("table");
      const head = t.createTHead().insertRow();
      columns.forEach((c) => {
        const th = document.createElement("th");
        const numeric = c.role === "aggregate" && c.type !== "array";
        if (numeric) th.className = "number";
        const button = Object.assign(document.createElement("button"), { textContent: c.name });
        button.addEventListener("click", () => {
          const dir = this.sortBy && this.sortBy[0] === c.name ? -this.sortBy[1] : (numeric ? -1 : 1);
          this.sortBy = [c.name, dir];
          this.render(state);
        });
        if (this.sortBy && this.sortBy[0] === c.name) {
          th.setAttribute("aria-sort", this.sortBy[1] > 0 ? "ascending" : "descending");
        }
        th.append(button);
        head.append(th);
      });
      const body = t.createTBody();
      rows.forEach((r) => {
        const row = body.insertRow();
        columns.forEach((c) => {
          const shown = tallydFormat.cell(r[c.name], c), td = row.insertCell();
          td.textContent = shown.text;
          if (shown.cls) td.className = shown.cls;
          if (shown.title) td.title = shown.title;
        });
      });
      this.$table.replaceChildren(t);
      const n = state.rows.length;
      this.$note.textContent = n > this.limit ? this.limit + " of more rows" + this.newest
        : n === 0 ? "no rows yet" : n + (n === 1 ? " row" : " rows");
      this.observed.rows = rows.map((r) => columns.map((c) => tallydFormat.cell(r[c.name], c).text));
    }

    summary() {
      const rows = this.observed.rows || [];
      return rows.length ? rows.length + " rows; first: " + rows[0].join(", ") : "no rows yet";
    }
  }

  const elements = { "tallyd-chart": TallydChart, "tallyd-tile": TallydTile,
                     "tallyd-top": TallydTop, "tallyd-table": TallydTable };
  Object.entries(elements).forEach(([name, cls]) => {
    if (!customElements.get(name)) customElements.define(name, cls);
  });
})();
