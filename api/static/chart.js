/* tallyd's live chart of a series, drawn with uPlot: the chart page and the dashboard both use
 * it, so a series answer and its changes are applied one way (api/live.py says what they hold).
 *
 *   const chart = tallydChart(element, { metric, unit, type, height, observed, onDraw,
 *                                        inProgress });
 *   chart.answer(fullSeriesAnswer); chart.change(seriesChange);
 *
 * The buckets after the answer's `complete_until` are still filling: a line is drawn dashed
 * there and bars and areas faded, so a filling bucket does not read as a drop; `inProgress:
 * "hide"` leaves them out. `observed` (optional) is kept up to date for tests and embedding
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

  // Axis labels: one form for the whole axis — all compact ("8K", "36K") when its largest tick
  // reaches 10,000, else all plain — never "8,000" beside "36K".
  function ticks(values) {
    const big = values.some((v) => v != null && Math.abs(v) >= 1e4);
    return values.map((v) => (v == null ? "" : big ? compact.format(v) : number(v)));
  }

  function tallydChart(el, options) {
    const css = getComputedStyle(document.documentElement);
    const color = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
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

    function data() {
      const x = state.x.map((ms) => ms / 1000);
      const first = state.x.findIndex((_, i) => filling(i));  // -1: every bucket final
      const done = state.series.map((s) => s.values.map((v, i) => (filling(i) ? null : v)));
      if (hide) return [x, ...done];
      const open = state.series.map((s) => s.values.map((v, i) =>
        (first >= 0 && i >= Math.max(0, first - (options.type === "bar" ? 0 : 1)) ? v : null)));
      return [x, ...done, ...open];
    }

    function build() {
      if (plot) plot.destroy();
      const bars = options.type === "bar" && uPlot.paths.bars
        ? uPlot.paths.bars({ size: [0.8] }) : null;
      const axis = { stroke: color("--fg", "#1f2328"), grid: { stroke: color("--grid", "#d0d7de") } };
      plot = new uPlot({
        ...size(),
        scales: { x: { time: true } },
        axes: [{ ...axis, space: 80 }, { ...axis, label: options.metric + (options.unit ? " (" + options.unit + ")" : ""),
          values: (u, vs) => (observed.ticks = ticks(vs).map((t) => t + unit)), size: 70 }],
        series: [{ label: "time" }, ...state.series.map((s, i) => {
          const stroke = palette[i % palette.length];
          return {
            label: s.name, stroke, width: 2, paths: bars || undefined, spanGaps: false,
            fill: options.type === "area" ? stroke + "33" : options.type === "bar" ? stroke + "aa"
              : undefined,
            value: (u, v) => number(v) + (v == null ? "" : unit),
          };
        }), ...(hide ? [] : state.series.map((s, i) => {
          const stroke = palette[i % palette.length];
          return {  // the same series, its buckets still filling
            label: s.name + " (filling)", stroke: stroke + "99", width: 2, dash: [6, 4],
            paths: bars || undefined, spanGaps: false,
            fill: options.type === "area" ? stroke + "14" : options.type === "bar" ? stroke + "40"
              : undefined,
            value: (u, v) => number(v) + (v == null ? "" : unit),
          };
        }))],
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
      if (options.onDraw) options.onDraw(state.freshness);
    }

    function answer(a) {
      state.x = a.x; state.series = a.series; state.freshness = a.freshness;
      state.bucket = a.bucket_ms; state.completeUntil = a.complete_until_ms; draw(true);
    }

    function change(c) {
      let rebuild = false;
      if (c.x) {  // the buckets moved: keep the values of those still shown
        const old = new Map(state.x.map((x, i) => [x, i]));
        state.series.forEach((s) => {
          s.values = c.x.map((x) => (old.has(x) ? s.values[old.get(x)] : null));
        });
        state.x = c.x;
      }
      (c.points || []).forEach(([name, x, v]) => {
        let s = state.series.find((t) => t.name === name);
        if (!s) {
          s = { name, values: state.x.map(() => null) }; state.series.push(s); rebuild = true;
        }
        const i = state.x.indexOf(x);
        if (i >= 0) s.values[i] = v;
      });
      if (c.removed && c.removed.length) {
        state.series = state.series.filter((s) => !c.removed.includes(s.name)); rebuild = true;
      }
      if (c.freshness) state.freshness = c.freshness;
      if ("complete_until_ms" in c) state.completeUntil = c.complete_until_ms;
      draw(rebuild);
    }

    const resize = () => plot && plot.setSize(size());
    new ResizeObserver(resize).observe(el);  // its frame or column changed width
    window.addEventListener("resize", resize);  // the height may follow the window's
    return { answer, change, drawn: () => plot !== null };
  }

  window.tallydChart = tallydChart;
  window.tallydNumber = number;
})();
