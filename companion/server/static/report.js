// The Performance tab's report section: the latest `companion report` (plots and the spec's
// tables measured on this machine) and a button that starts a quick run, with its progress.
"use strict";

(() => {
  const POLL_MS = 2000;
  let polling = null;

  const el = (tag, attrs = {}, text) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  };
  // the page's API client (it sends the signed-in key and opens the sign-in on a 401)
  const call = (method, path) => window.C.api(method, path);
  const cellText = (v) => (v === null || v === undefined ? "-" : String(v));

  function section() {
    const root = el("section", { id: "perf-report", "aria-labelledby": "perf-report-title" });
    root.append(
      el("h3", { id: "perf-report-title" }, "Performance report"),
      el("p", { id: "report-meta", class: "muted" }, "Loading the latest report…"),
    );
    const run = el("button", { id: "report-run", type: "button" }, "Run a quick report");
    const progress = el("progress", { id: "report-progress", max: "1", value: "0", hidden: "" });
    progress.setAttribute("aria-label", "Report run progress");
    root.append(run, progress, el("p", { id: "report-status", class: "muted", role: "status" }));
    root.append(el("div", { id: "report-plots" }), el("div", { id: "report-tables" }));
    const open = el("a", { id: "report-open", href: "/api/v1/report/html", target: "_blank", hidden: "" },
      "Open the full report");
    root.append(open);
    run.addEventListener("click", start);
    return root;
  }

  function showTable(t) {
    const details = el("details", { "data-table": t.id });
    details.append(el("summary", {}, t.title));
    const table = el("table", { class: "report-table" });
    const head = el("tr");
    for (const c of t.columns) head.append(el("th", { scope: "col" }, c));
    table.append(el("thead"), el("tbody"));
    table.tHead.append(head);
    for (const r of t.rows) {
      const tr = el("tr");
      for (const c of r) tr.append(el("td", typeof c === "number" ? { class: "num" } : {}, cellText(c)));
      table.tBodies[0].append(tr);
    }
    details.append(table);
    if (t.note) details.append(el("p", { class: "muted" }, t.note));
    return details;
  }

  function showPlot(p, svgText) {
    const fig = el("figure", { "data-plot": p.id });
    const img = el("img", { alt: `${p.title} (${p.x_label} / ${p.y_label})`, class: "report-plot" });
    img.src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(svgText);
    fig.append(img, el("figcaption", {}, p.title));
    return fig;
  }

  async function loadReport() {
    const meta = document.getElementById("report-meta");
    let data;
    try {
      data = await call("GET", "/api/v1/report");
    } catch (err) {
      meta.textContent = err.message;
      return;
    }
    const m = data.machine;
    meta.textContent = `${data.created}: ${data.command} took ${data.duration_s} s on ${m.cpu}, ` +
      `${m.describe} (tier ${m.tier}, model ${m.chosen_model.size}).`;
    document.getElementById("report-plots").replaceChildren(
      ...data.plots.filter((p) => data.svgs[p.id]).map((p) => showPlot(p, data.svgs[p.id])));
    document.getElementById("report-tables").replaceChildren(...data.tables.map(showTable));
    document.getElementById("report-open").hidden = false;
  }

  function showStatus(s) {
    const bar = document.getElementById("report-progress");
    const text = document.getElementById("report-status");
    const active = s.state === "starting" || s.state === "running";
    bar.hidden = !active;
    bar.value = s.fraction || 0;
    document.getElementById("report-run").disabled = active;
    if (active) {
      text.textContent = `Running (${Math.round((s.fraction || 0) * 100)} %, ${s.elapsed_s || 0} s): ${s.doing || s.step || "starting"}`;
    } else if (s.state === "failed") {
      text.textContent = `The last run failed: ${s.error || JSON.stringify(s.errors || {})}`;
    } else if (s.state === "done") {
      text.textContent = `The last run finished in ${s.elapsed_s} s.`;
    }
    return active;
  }

  async function poll() {
    let s;
    try { s = await call("GET", "/api/v1/report/run"); } catch { return; }
    const wasPolling = polling !== null;
    if (showStatus(s)) {
      if (!wasPolling) polling = setInterval(poll, POLL_MS);
    } else if (wasPolling) {
      clearInterval(polling);
      polling = null;
      loadReport();
    }
  }

  async function start() {
    const text = document.getElementById("report-status");
    try {
      showStatus(await call("POST", "/api/v1/report/run"));
      if (polling === null) polling = setInterval(poll, POLL_MS);
    } catch (err) {
      text.textContent = `Could not start a run: ${err.message}`;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    // perf.js builds the tab first (its listener was added earlier) and leaves #perf-extra
    const host = document.getElementById("perf-extra") || document.getElementById("panel-perf");
    if (!host) return;
    host.append(section());
    const reload = () => { loadReport(); poll(); };
    reload();
    window.C.onSignIn(reload);
    document.getElementById("tab-perf").addEventListener("click", loadReport);
  });
})();
