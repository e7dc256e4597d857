// companion web page: the Performance tab. Live figures from /api/v1/stats and two charts with
// labelled axes and units. Kept in its own file so the report's plots can be added here.
"use strict";

(() => {
  const { $, el, api } = window.C;
  const SVG = "http://www.w3.org/2000/svg";
  const W = 320, H = 150, L = 56, R = 8, T = 10, B = 30; // the plot area's margins
  const samples = []; // {t: ms since epoch, rt: ms, tps: tokens/s}
  const WINDOW = 60; // samples kept

  function svgEl(tag, attrs, text) {
    const n = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    return n;
  }

  function niceMax(v) {
    if (v <= 0) return 1;
    const p = 10 ** Math.floor(Math.log10(v));
    return [1, 2, 4, 5, 10].map((m) => m * p).find((m) => m >= v);
  }

  // A line chart: y from 0 to a round maximum (4 gridlines, unit in the axis title), x in
  // minutes before now.
  function chart(svg, points, { unit, title }) {
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.replaceChildren();
    const max = niceMax(Math.max(0, ...points.map((p) => p.y)));
    const now = Date.now();
    const span = Math.max(60_000, now - (points.length ? points[0].t : now));
    const x = (t) => L + (W - L - R) * (1 - (now - t) / span);
    const y = (v) => H - B - (H - B - T) * (v / max);
    const step = max / 4; // round ticks: a quarter of a round maximum
    let digits = 0; // as many decimals as the step needs (0.25 -> 2)
    while (digits < 3 && Math.abs(Math.round(step * 10 ** digits) - step * 10 ** digits) > 1e-6) digits++;
    for (let i = 0; i <= 4; i++) {
      const v = step * i;
      svg.append(svgEl("line", { class: i ? "grid" : "axis", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      svg.append(svgEl("text", { x: L - 4, y: y(v) + 3, "text-anchor": "end" },
        i ? v.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits }) : "0"));
    }
    svg.append(svgEl("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
    const minutes = span / 60_000;
    for (const f of [0, 0.5, 1]) {
      const ago = minutes * (1 - f);
      svg.append(svgEl("text", { x: L + (W - L - R) * f, y: H - B + 12, "text-anchor": f === 0 ? "start" : f === 1 ? "end" : "middle" },
        ago < 0.05 ? "now" : `−${ago.toFixed(ago < 2 ? 1 : 0)} min`));
    }
    svg.append(svgEl("text", { x: L + (W - L - R) / 2, y: H - 3, "text-anchor": "middle" }, "time"));
    svg.append(svgEl("text", { x: 9, y: T + (H - B - T) / 2, "text-anchor": "middle", transform: `rotate(-90 9 ${T + (H - B - T) / 2})` }, unit));
    if (points.length) {
      svg.append(svgEl("polyline", { points: points.map((p) => `${x(p.t).toFixed(1)},${y(p.y).toFixed(1)}`).join(" ") }));
      const last = points[points.length - 1];
      svg.append(svgEl("circle", { cx: x(last.t), cy: y(last.y), r: 2.5 }));
    }
    svg.setAttribute("aria-label", `${title}: ${points.length ? `latest ${fmt(points[points.length - 1].y)} ${unit}` : "no data yet"}`);
  }

  function fmt(v) { return v >= 100 ? Math.round(v).toString() : v >= 10 ? v.toFixed(0) : v.toFixed(1); }

  function build() {
    $("#panel-perf").replaceChildren(
      el("p", { id: "perf-note", class: "note", hidden: true }),
      el("dl", { id: "perf", class: "perf" }),
      el("figure", {}, el("figcaption", { text: "Average response time (ms), sampled every 5 s" }),
        svgNode("chart-rt", "Average response time")),
      el("figure", {}, el("figcaption", { text: "Generation speed (tokens per second), sampled every 5 s" }),
        svgNode("chart-tps", "Tokens per second")),
      el("section", { id: "perf-extra" })); // more plots (the latest report's) go here
  }

  function svgNode(id, label) {
    return svgEl("svg", { id, class: "chart", role: "img", "aria-label": label });
  }

  async function loadStats() {
    let s;
    try {
      s = await api("GET", "/api/v1/stats");
    } catch (e) {
      $("#perf-note").hidden = false;
      $("#perf-note").textContent = /admin/.test(e.message) ? "Performance figures need an admin API key." : e.message;
      return;
    }
    $("#perf-note").hidden = true;
    $("#model-name").textContent = `${s.model} (${s.model_size})`;
    const engine = s.engine || {};
    const rows = [
      ["Avg response", `${s.avg_response_time.toFixed(0)} ms`],
      ["p95 response", `${s.p95_response_time.toFixed(0)} ms`],
      ["Time to first token", `${s.avg_time_to_first_token.toFixed(0)} ms`],
      ["Tokens/s", `${s.tokens_per_second.toFixed(1)} tok/s`],
      ["Cache hit rate", `${(s.cache_hit_rate * 100).toFixed(1)} %`],
      ["Memory use", `${s.memory_usage_mb.toFixed(0)} MB`],
      ["Replies generating now", String(engine.active_sequences || 0)],
      ["Requests", String(s.requests)],
      ["Errors", String(s.errors)],
      ["Uptime", `${Math.round((s.uptime_s || 0) / 60)} min`],
    ];
    $("#perf").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v, "data-metric": k })]));
    samples.push({ t: Date.now(), rt: s.avg_response_time, tps: s.tokens_per_second });
    samples.splice(0, Math.max(0, samples.length - WINDOW));
    chart($("#chart-rt"), samples.map((p) => ({ t: p.t, y: p.rt })), { unit: "ms", title: "Average response time" });
    chart($("#chart-tps"), samples.map((p) => ({ t: p.t, y: p.tps })), { unit: "tok/s", title: "Tokens per second" });
  }

  document.addEventListener("DOMContentLoaded", build);
  Object.assign(window.C, { loadStats, chart });
})();
