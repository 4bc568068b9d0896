/* tallyd's live chart of a series, drawn with uPlot: the chart page and the dashboard both use
 * it, so a series answer and its changes are applied one way (api/live.py says what they hold).
 *
 *   const chart = tallydChart(element, { metric, unit, type, height, observed, onDraw,
 *                                        inProgress, stack, colors });
 *   chart.answer(fullSeriesAnswer); chart.change(seriesChange);
 *
 * The buckets after the answer's `complete_until` are still filling: a line is drawn dashed
 * there and bars and areas faded, so a filling bucket does not read as a drop; `inProgress:
 * "hide"` leaves them out. `stack: true` stacks areas and bars (each series drawn on top of the
 * ones before it; hover values stay each series' own). `colors` ({fg, grid}) overrides the page's
 * --fg/--grid CSS variables (a web component passes a function of its own); `tz`, an IANA zone for
 * the time axis (default: the reader's). `observed` (optional) is kept up to date for tests and embedding
 * apps: updates applied, points drawn, series names, the last bucket, the buckets in progress.
 * tallydNumber formats a number the way tables show it.
 */
(function () {
  "use strict";
  const palette = ["#2f81f7", "#e8590c", "#2da44e", "#bf3989", "#8250df", "#d4a72c",
                   "#1b7c83", "#cf222e", "#6e7781", "#953800"];
  // One number format everywhere: thousands separators, at most 3 decimals (3 significant
  // digits below 1, so 0.000123 stays visible); exact sums ending in ...0000001 read cleanly.
  const plain = new Intl.NumberFormat(undefined, { maximumFractionDigits: 3 });
  const small = new Intl.NumberFormat(undefined, { maximumSignificantDigits: 3 });
  const compact = new Intl.NumberFormat(undefined, {
    notation: "compact", maximumFractionDigits: 1 });

  function number(v) {
    if (v == null) return "\u2013";
    if (typeof v !== "number") return String(v);
    return (v !== 0 && Math.abs(v) < 1 ? small : plain).format(v);
  }

  // A headline figure (a KPI tile, a bar's value): three significant digits with an SI-style
  // prefix from 10,000 on ("36.1K", "1.24M"); below that as tables show it.
  const headline = new Intl.NumberFormat(undefined, {
    notation: "compact", maximumSignificantDigits: 3 });
  function si(v) {
    return typeof v === "number" && Math.abs(v) >= 1e4 ? headline.format(v) : number(v);
  }

  // An answer's RFC 3339 UTC time as a reader scans it: "2026-09-21 14:18:00 UTC".
  function when(text) {
    return text.replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  // ---- rows: one readable form per kind of value, and the server's order ------------------
  function cell(value, column) {  // -> { text, title?, cls? }
    if (value == null) return { text: "\u2013", cls: "none" };
    if (column.role === "window") {  // RFC 3339 UTC: the minute is what a reader scans for
      return { text: value.slice(0, 16).replace("T", " "), title: value };
    }
    if (Array.isArray(value)) {  // top_k: [{value, count}] -> "p1 (120), p7 (98), …"
      const text = (i) => String(i.value) + " (" + number(i.count) + ")";
      const shown = value.slice(0, 5).map(text).join(", ");
      return { text: value.length > 5 ? shown + ", \u2026" : shown,
               title: value.map(text).join(", "), cls: "list" };
    }
    if (typeof value === "number" && column.role === "aggregate") {
      return { text: number(value), cls: "number" };
    }
    return { text: typeof value === "object" ? JSON.stringify(value) : String(value) };
  }

  function rank(v) {  // views.sketches.sort_key: booleans, numbers, text, then nulls
    if (v == null) return [3, 0];
    if (typeof v === "boolean") return [0, Number(v)];
    if (typeof v === "number") return [1, v];
    return [2, String(v)];
  }

  function compare(a, b) {
    const [ra, va] = rank(a), [rb, vb] = rank(b);
    if (ra !== rb) return ra - rb;
    return va < vb ? -1 : va > vb ? 1 : 0;
  }

  // A query's rows, kept current by its live changes: keyed by window and group keys, ordered
  // as the server orders them: by orderBy ("col" or "-col", nulls last) when asked, then window
  // and keys (newestFirst: the window newest first).
  function rowsState(newestFirst, orderBy) {
    const state = { columns: [], keys: [], rows: [], freshness: null };
    const id = (row) => JSON.stringify(state.keys.map((k) => row[k]));
    const by = orderBy ? orderBy.replace(/^-/, "") : null;
    const sign = orderBy && orderBy.startsWith("-") ? -1 : 1;
    function order(a, b) {
      if (by) {
        const [na, nb] = [a[by] == null, b[by] == null];
        if (na !== nb) return na ? 1 : -1;
        const c = sign * compare(a[by], b[by]);
        if (c) return c;
      }
      for (const [i, k] of state.keys.entries()) {
        const c = compare(a[k], b[k]);
        if (c) return i === 0 && newestFirst && state.windowed ? -c : c;
      }
      return 0;
    }
    state.answer = (a) => {
      state.columns = a.columns;
      state.windowed = a.columns.some((c) => c.role === "window");
      state.keys = [...a.columns.filter((c) => c.role === "window"),
                    ...a.columns.filter((c) => c.role === "key")].map((c) => c.name);
      state.rows = a.rows.slice(); state.freshness = a.freshness;
    };
    state.change = (c) => {
      const rows = new Map(state.rows.map((r) => [id(r), r]));
      c.delete.forEach((gone) => rows.delete(id(gone)));
      c.upsert.forEach((r) => rows.set(id(r), r));
      state.rows = [...rows.values()].sort(order);
      if (c.freshness) state.freshness = c.freshness;
    };
    return state;
  }

  // A series answer kept current by its live changes (api/live.py: x when the buckets moved,
  // points, removed series). Returns whether the set of series changed.
  function applySeries(state, c) {
    let named = false;
    if (c.x) {  // the buckets moved: keep the values of those still shown
      const old = new Map(state.x.map((x, i) => [x, i]));
      state.series.forEach((s) => {
        s.values = c.x.map((x) => (old.has(x) ? s.values[old.get(x)] : null));
      });
      state.x = c.x;
    }
    (c.points || []).forEach(([name, x, v]) => {
      let s = state.series.find((t) => t.name === name);
      if (!s) { s = { name, values: state.x.map(() => null) }; state.series.push(s); named = true; }
      const i = state.x.indexOf(x);
      if (i >= 0) s.values[i] = v;
    });
    if (c.removed && c.removed.length) {
      state.series = state.series.filter((s) => !c.removed.includes(s.name)); named = true;
    }
    if (c.freshness) state.freshness = c.freshness;
    if ("complete_until_ms" in c) state.completeUntil = c.complete_until_ms;
    return named;
  }

  // Axis labels: one form for the whole axis — all compact ("8K", "36K") when its largest tick
  // reaches 10,000, else all plain — never "8,000" beside "36K".
  function ticks(values) {
    const big = values.some((v) => v != null && Math.abs(v) >= 1e4);
    return values.map((v) => (v == null ? "" : big ? compact.format(v) : number(v)));
  }

  function tallydChart(el, options) {
    const css = getComputedStyle(document.documentElement);
    const color = (name, fallback) => {
      const colors = typeof options.colors === "function" ? options.colors() : options.colors || {};
      return colors[name.slice(2)] || css.getPropertyValue(name).trim() || fallback;
    };
    const stack = Boolean(options.stack) && options.type !== "line";
    const unit = options.unit ? " " + options.unit : "";
    const observed = options.observed || {};
    const state = { x: [], series: [], freshness: null, bucket: 0, completeUntil: null };
    const hide = options.inProgress === "hide";
    let plot = null;
    Object.assign(observed, { updates: 0, points: 0, series: [] });

    function size() {
      return { width: Math.max(200, el.clientWidth), height: options.height() };
    }

    // A bucket is final when it ends at or before complete_until (null: no watermark yet, so
    // nothing is final). Each series is drawn twice: its final buckets solid, and — dashed or
    // faded — the last final bucket (so the two lines join) and every bucket after it.
    function filling(i) {
      return state.completeUntil == null || state.x[i] + state.bucket > state.completeUntil;
    }

    // Stacked: each series' values plus those of the series before it (a missing value adds
    // nothing), so each band is drawn between its series and the one below.
    function heights() {
      if (!stack) return state.series.map((s) => s.values);
      const sum = state.x.map(() => 0);
      return state.series.map((s) => s.values.map((v, i) => (sum[i] += v == null ? 0 : v)));
    }

    function data() {
      const x = state.x.map((ms) => ms / 1000);
      const first = state.x.findIndex((_, i) => filling(i));  // -1: every bucket final
      const shown = heights();
      const done = shown.map((values) => values.map((v, i) => (filling(i) ? null : v)));
      if (hide) return [x, ...done];
      const open = shown.map((values) => values.map((v, i) =>
        (first >= 0 && i >= Math.max(0, first - (options.type === "bar" ? 0 : 1)) ? v : null)));
      return [x, ...done, ...open];
    }

    // The time axis spans the buckets asked for, from the first's start to the last's end: one
    // bucket (a fresh chart's first minute) is a minute wide, not uPlot's guess of years.
    function span(u, min, max) {
      if (!state.x.length) return [min, max];
      return [state.x[0] / 1000, (state.x[state.x.length - 1] + state.bucket) / 1000];
    }

    // Areas and bars stand on zero: a bar from 6 to 30 would read as five times its neighbour.
    function zeroBased(u, min, max) {
      if (min == null || max == null) return [0, 1];
      const lo = Math.min(0, min), hi = Math.max(0, max);
      const pad = (hi - lo || 1) * 0.08;
      return [lo < 0 ? lo - pad : 0, hi > 0 ? hi + pad : 0];
    }

    // A hover value is the series' own, not its stacked height.
    function own(i, idx, v) {
      const raw = stack && idx != null ? state.series[i].values[idx] : v;
      return number(raw) + (raw == null ? "" : unit);
    }

    // uPlot clips a series' fill to the band between it and the series below it.
    function bands() {
      const n = state.series.length, out = [];
      for (let i = 1; i < n; i++) {
        out.push({ series: [i + 1, i] });
        if (!hide) out.push({ series: [n + i + 1, n + i] });
      }
      return out;
    }

    function build() {
      if (plot) plot.destroy();
      const bars = options.type === "bar" && uPlot.paths.bars
        ? uPlot.paths.bars({ size: [0.8] }) : null;
      const axis = { stroke: color("--fg", "#1f2328"), grid: { stroke: color("--grid", "#d0d7de") } };
      observed.axis = axis.stroke;
      plot = new uPlot({
        ...size(),
        scales: { x: { time: true, range: span },
                  y: options.type === "line" ? {} : { range: zeroBased } },
        // the time axis in the zone asked for (tz=), else the reader's
        tzDate: options.tz ? (ts) => uPlot.tzDate(new Date(ts * 1e3), options.tz) : undefined,
        axes: [{ ...axis, space: 60 }, { ...axis, label: options.metric + (options.unit ? " (" + options.unit + ")" : ""),
          values: (u, vs) => (observed.ticks = ticks(vs).map((t) => t + unit)), size: 70 }],
        series: [{ label: "time" }, ...state.series.map((s, i) => {
          const stroke = palette[i % palette.length];
          return {
            label: s.name, stroke, width: 2, paths: bars || undefined, spanGaps: false,
            fill: options.type === "area" ? stroke + (stack ? "66" : "33")
              : options.type === "bar" ? stroke + "aa" : undefined,
            value: (u, v, si, idx) => own(i, idx, v),
          };
        }), ...(hide ? [] : state.series.map((s, i) => {
          const stroke = palette[i % palette.length];
          return {  // the same series, its buckets still filling
            label: s.name + " (filling)", stroke: stroke + "99", width: 2, dash: [6, 4],
            paths: bars || undefined, spanGaps: false,
            fill: options.type === "area" ? stroke + (stack ? "2e" : "14")
              : options.type === "bar" ? stroke + "40" : undefined,
            value: (u, v, si, idx) => own(i, idx, v),
          };
        }))],
        bands: stack ? bands() : undefined,
        hooks: { draw: [(u) => {  // what the axes show: tests and apps read them here
          observed.yMax = u.scales.y.max;
          observed.xRange = [u.scales.x.min * 1000, u.scales.x.max * 1000];
          observed.xTicks = (u.axes[0]._values || []).filter((t) => t != null);
        }] },
        legend: { live: true },
      }, data(), el);
      // One legend entry per series: its filling part has the same colour and name.
      const rows = plot.root.querySelectorAll(".u-legend .u-series");
      rows.forEach((row, i) => { if (i > state.series.length) row.style.display = "none"; });
      observed.series = state.series.map((s) => s.name);
    }

    function draw(rebuild) {
      observed.points = state.series.reduce(
        (n, s) => n + s.values.filter((v) => v != null).length, 0);
      const drawn = data();
      const count = (part) => part.reduce((n, vs) => n + vs.filter((v) => v != null).length, 0);
      observed.drawnFinal = count(drawn.slice(1, 1 + state.series.length));  // solid points
      observed.drawnFilling = count(drawn.slice(1 + state.series.length));  // dashed / faded
      if (rebuild || !plot) build(); else plot.setData(drawn);
      observed.updates += 1;
      observed.lastX = state.x[state.x.length - 1];
      observed.completeUntil = state.completeUntil;
      observed.filling = state.x.filter((_, i) => filling(i)).length;  // buckets in progress
      // The newest final bucket's values (the newest bucket's while none is final): what an
      // accessible summary reads out.
      let last = state.x.length - 1;
      while (last > 0 && filling(last) && state.completeUntil != null) last -= 1;
      observed.latestX = state.x[last];
      observed.latest = state.series.map((s) => [s.name, last >= 0 ? s.values[last] : null]);
      if (options.onDraw) options.onDraw(state.freshness);
    }

    function answer(a) {
      state.x = a.x; state.series = a.series; state.freshness = a.freshness;
      state.bucket = a.bucket_ms; state.completeUntil = a.complete_until_ms; draw(true);
    }

    function change(c) {
      draw(applySeries(state, c));
    }

    const resize = () => plot && plot.setSize(size());
    const watch = new ResizeObserver(resize);
    watch.observe(el);  // its frame or column changed width
    window.addEventListener("resize", resize);  // the height may follow the window's
    // restyle: the colours changed (the reader's colour scheme): draw again with the new ones;
    // destroy: the chart is gone (its element removed): nothing of it stays alive
    const destroy = () => {
      watch.disconnect();
      window.removeEventListener("resize", resize);
      if (plot) plot.destroy();
      plot = null;
    };
    return { answer, change, drawn: () => plot !== null, restyle: () => plot && draw(true),
             destroy };
  }

  window.tallydChart = tallydChart;
  window.tallydNumber = number;
  window.tallydFormat = { number, si, when, cell, compare, rowsState, applySeries };
})();
