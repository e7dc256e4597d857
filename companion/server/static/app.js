// companion web page: chat with streamed tokens, sessions, memory, persona, performance.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { session: null, busy: false, rt: [], tps: [] };

function userId() {
  const v = $("#user-id").value.trim();
  return /^[A-Za-z0-9_.:@-]{1,64}$/.test(v) ? v : "default";
}

async function api(method, path, body) {
  const opts = { method, headers: {} };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(path, opts);
  const data = resp.status === 204 ? null : await resp.json().catch(() => null);
  if (!resp.ok) throw new Error((data && data.error && data.error.message) || `HTTP ${resp.status}`);
  return data;
}

function setStatus(text, isError = false) {
  const el = $("#status");
  el.textContent = text;
  el.classList.toggle("danger", isError);
}

function addMessage(role, text, meta) {
  const li = document.createElement("li");
  li.className = role;
  const who = document.createElement("span");
  who.className = "sr-only";
  who.textContent = role === "user" ? "You said: " : "Companion said: ";
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  li.append(who, body);
  if (meta) li.append(metaLine(meta));
  $("#messages").append(li);
  li.scrollIntoView({ block: "end" });
  return li;
}

function metaLine(text) {
  const m = document.createElement("span");
  m.className = "meta";
  m.textContent = text;
  return m;
}

// Reads a text/event-stream response body, calling onEvent(name, data) per event.
async function readSSE(resp, onEvent) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) onEvent(name, JSON.parse(data));
    }
  }
}

async function send(text) {
  state.busy = true;
  $("#send").disabled = true;
  addMessage("user", text);
  const reply = addMessage("assistant", "");
  reply.setAttribute("aria-busy", "true");
  const body = { message: text, user_id: userId(), stream: true };
  if (state.session) body.session_id = state.session;
  try {
    const resp = await fetch("/api/v1/chat", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    if (!resp.ok) {
      const err = await resp.json().catch(() => ({}));
      throw new Error((err.error && err.error.message) || `HTTP ${resp.status}`);
    }
    await readSSE(resp, (name, data) => {
      if (name === "token") reply.querySelector(".text").textContent += data.text;
      else if (name === "done") finishReply(reply, data);
      else if (name === "error") throw new Error(data.error.message);
    });
    setStatus("");
  } catch (e) {
    reply.remove();
    setStatus(`Error: ${e.message}`, true);
  } finally {
    reply.removeAttribute("aria-busy");
    state.busy = false;
    $("#send").disabled = false;
    refreshAll();
  }
}

function finishReply(li, result) {
  li.querySelector(".text").textContent = result.response;
  const t = result.timings || {};
  li.append(metaLine(`${result.usage.completion_tokens} tokens · ${Math.round(t.total_ms || 0)} ms` +
    (result.cached ? " · cached" : "")));
  state.session = result.session_id;
  showUsedMemories(result.memories_used || []);
}

async function loadSessions() {
  const list = $("#session-list");
  const sessions = await api("GET", `/api/v1/sessions?user_id=${encodeURIComponent(userId())}`);
  list.replaceChildren();
  for (const s of sessions) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = s.title || new Date(s.updated_at).toLocaleString();
    b.setAttribute("aria-current", String(s.id === state.session));
    b.addEventListener("click", () => openSession(s.id));
    li.append(b);
    list.append(li);
  }
}

async function openSession(id) {
  state.session = id;
  const data = await api("GET", `/api/v1/sessions/${encodeURIComponent(id)}/messages`);
  $("#messages").replaceChildren();
  for (const m of data.messages) {
    addMessage(m.role, m.text, m.status === "complete" ? null : m.status);
  }
  loadSessions();
}

function newSession() {
  state.session = null;
  $("#messages").replaceChildren();
  loadSessions();
  $("#composer-input").focus();
}

function sparkline(svg, values) {
  const w = svg.clientWidth || 300, h = svg.clientHeight || 60;
  const max = Math.max(...values, 1);
  const step = values.length > 1 ? w / (values.length - 1) : w;
  const pts = values.map((v, i) => `${(i * step).toFixed(1)},${(h - (v / max) * (h - 4) - 2).toFixed(1)}`);
  svg.innerHTML = `<polyline points="${pts.join(" ")}"></polyline>`;
}

async function loadStats() {
  const s = await api("GET", "/api/v1/stats");
  $("#model-name").textContent = `${s.model} (${s.model_size})`;
  const rows = [
    ["Avg response", `${s.avg_response_time.toFixed(0)} ms`],
    ["p95 response", `${s.p95_response_time.toFixed(0)} ms`],
    ["Time to first token", `${s.avg_time_to_first_token.toFixed(0)} ms`],
    ["Tokens/s", s.tokens_per_second.toFixed(1)],
    ["Cache hit rate", `${(s.cache_hit_rate * 100).toFixed(1)} %`],
    ["Memory use", `${s.memory_usage_mb.toFixed(0)} MB`],
    ["Active users", String((s.engine && s.engine.active_sequences) || 0)],
    ["Requests", String(s.requests)],
    ["Errors", String(s.errors)],
  ];
  const dl = $("#perf");
  dl.replaceChildren();
  for (const [k, v] of rows) {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v; dd.dataset.metric = k;
    dl.append(dt, dd);
  }
  state.rt.push(s.avg_response_time); state.tps.push(s.tokens_per_second);
  state.rt = state.rt.slice(-60); state.tps = state.tps.slice(-60);
  sparkline($("#chart-rt"), state.rt);
  sparkline($("#chart-tps"), state.tps);
}

function setupTabs() {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  const select = (tab) => {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1;
      document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
    }
    tab.focus();
  };
  tabs.forEach((t, i) => {
    t.addEventListener("click", () => select(t));
    t.addEventListener("keydown", (e) => {
      if (e.key === "ArrowRight") select(tabs[(i + 1) % tabs.length]);
      if (e.key === "ArrowLeft") select(tabs[(i - 1 + tabs.length) % tabs.length]);
    });
  });
}

function refreshAll() {
  loadSessions().catch((e) => setStatus(e.message, true));
  loadStats().catch(() => {});
  if (window.companionPanels) window.companionPanels.refresh();
}

function showUsedMemories(list) {
  if (window.companionPanels) window.companionPanels.showUsed(list);
}

document.addEventListener("DOMContentLoaded", () => {
  setupTabs();
  $("#composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("#composer-input");
    const text = input.value.trim();
    if (!text || state.busy) return;
    input.value = "";
    send(text);
  });
  $("#composer-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("#composer").requestSubmit(); }
  });
  $("#new-session").addEventListener("click", newSession);
  $("#user-id").addEventListener("change", newSession);
  refreshAll();
  setInterval(() => loadStats().catch(() => {}), 3000);
});
