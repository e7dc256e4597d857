// companion web page: the conversation. Markdown (marked + DOMPurify + highlight.js), streamed
// replies with Stop, and the actions: copy, edit-and-resend, regenerate (alternatives), continue.
"use strict";

(() => {
  const { $, el, api, state } = window.C;
  const persona = { name: "Companion", avatarUrl: null, greeting: "" };

  // Markdown to safe HTML: marked renders, DOMPurify sanitises, highlight.js colours code.
  function renderMarkdown(node, text) {
    if (!window.marked || !window.DOMPurify) { node.textContent = text; return; }
    const html = window.marked.parse(text, { gfm: true, breaks: true });
    node.innerHTML = window.DOMPurify.sanitize(html, { USE_PROFILE: { html: true } });
    node.querySelectorAll("a[href]").forEach((a) => { a.target = "_blank"; a.rel = "noopener noreferrer"; });
    if (window.hljs) node.querySelectorAll("pre code").forEach((c) => window.hljs.highlightElement(c));
  }

  function avatar(role) {
    if (role === "user") return el("div", { class: "avatar", "aria-hidden": "true", text: window.C.userId().slice(0, 1).toUpperCase() });
    const a = el("div", { class: "avatar", "aria-hidden": "true" });
    if (persona.avatarUrl) a.append(el("img", { src: persona.avatarUrl, alt: "" }));
    else a.textContent = persona.name.slice(0, 1).toUpperCase();
    return a;
  }

  function metaText(m) {
    const t = m.timings || {};
    const parts = [];
    if (m.token_count) parts.push(`${m.token_count} tokens`);
    if (t.total_ms) parts.push(`${Math.round(t.total_ms)} ms`);
    if (t.tokens_per_second) parts.push(`${t.tokens_per_second.toFixed(1)} tok/s`);
    if (m.cached) parts.push("cached");
    return parts.join(" · ");
  }

  // One message as shown: bubble, who/when, flags, meta, actions.
  function bubble(m, { last = false, alts = [] } = {}) {
    const li = el("li", { class: `msg ${m.role}`, "data-id": m.id || "" });
    const who = el("div", { class: "who" },
      el("span", { text: m.role === "user" ? "You" : persona.name }),
      m.created_at ? el("time", { datetime: m.created_at, text: window.C.when(m.created_at) }) : null);
    const text = el("div", { class: "text" });
    const box = el("div", { class: "bubble" }, who,
      el("span", { class: "sr-only", text: m.role === "user" ? "You said: " : "Companion said: " }), text);
    li.append(avatar(m.role), box);
    li.raw = m.text;
    if (m.role === "user") text.textContent = m.text; else renderMarkdown(text, m.text);
    finish(li, m, { last, alts });
    return li;
  }

  // Flags, meta line and action buttons for a finished (or stopped) message.
  function finish(li, m, { last = false, alts = [] } = {}) {
    const box = li.querySelector(".bubble");
    box.querySelectorAll(".flag, .meta, .actions").forEach((n) => n.remove());
    li.classList.remove("cursor");
    if (m.role === "assistant" && m.finish_reason === "length") {
      box.append(el("span", { class: "flag cut", text: "✂ Cut at the length limit" }));
    } else if (m.role === "assistant" && (m.status === "interrupted" || m.finish_reason === "cancelled")) {
      box.append(el("span", { class: "flag", text: "■ Stopped" }));
    } else if (m.role === "assistant" && m.status === "failed") {
      box.append(el("span", { class: "flag cut", text: "Failed" }));
    }
    const meta = metaText(m);
    if (meta && m.role === "assistant") box.append(el("span", { class: "meta", text: meta }));
    const actions = el("div", { class: "actions" });
    actions.append(el("button", { type: "button", text: "Copy", "aria-label": "Copy message", onclick: () => copy(li.raw) }));
    if (m.role === "user" && m.id) {
      actions.append(el("button", { type: "button", text: "Edit", "aria-label": "Edit and resend", onclick: () => startEdit(li, m) }));
    }
    if (m.role === "assistant" && m.id && last) {
      actions.append(el("button", { type: "button", text: "↻ Regenerate", onclick: () => regenerate(li, m) }));
      if (m.finish_reason === "length" || m.finish_reason === "cancelled") {
        actions.append(el("button", { type: "button", text: "→ Continue", onclick: () => continueReply(li, m) }));
      }
    }
    if (alts.length > 1) actions.append(altSwitcher(li, m, alts));
    box.append(actions);
  }

  // "‹ 2/3 ›": read the other replies a regenerate kept.
  function altSwitcher(li, m, alts) {
    let i = alts.findIndex((a) => a.id === m.id);
    const label = el("span", { "aria-live": "polite" });
    const show = () => {
      const a = alts[i];
      label.textContent = `${i + 1}/${alts.length}`;
      li.raw = a.text;
      renderMarkdown(li.querySelector(".text"), a.text);
      li.dataset.viewing = String(a.id);
    };
    const step = (d) => () => { i = (i + d + alts.length) % alts.length; show(); };
    label.textContent = `${i + 1}/${alts.length}`;
    return el("span", { class: "alts" },
      el("button", { type: "button", text: "‹", "aria-label": "Previous reply", onclick: step(-1) }), label,
      el("button", { type: "button", text: "›", "aria-label": "Next reply", onclick: step(1) }));
  }

  async function copy(text) {
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      const t = el("textarea", { style: "position:fixed;opacity:0" });
      t.value = text; document.body.append(t); t.select(); document.execCommand("copy"); t.remove();
    }
    window.C.toast("Copied to the clipboard.");
  }

  function scrollDown() { const m = $("#messages"); m.scrollTop = m.scrollHeight; }

  function greeting() {
    if (!persona.greeting) return null;
    const text = persona.greeting.replace(/\{\{char\}\}/gi, persona.name)
      .replace(/\{\{user\}\}/gi, window.C.userId() === "default" ? "you" : window.C.userId());
    const li = bubble({ role: "assistant", text, status: "complete" });
    li.classList.add("greeting");
    li.querySelector(".actions").remove();
    return li;
  }

  // Show a session from the server: active messages; a reply's alternatives share alt_group.
  function render(messages) {
    const shown = messages.filter((m) => m.active !== false);
    const lastId = shown.length ? shown[shown.length - 1].id : null;
    const list = $("#messages");
    list.replaceChildren(...[greeting()].filter(Boolean));
    for (const m of shown) {
      const alts = m.alt_group ? messages.filter((a) => a.role === "assistant" && a.alt_group === m.alt_group) : [];
      list.append(bubble(m, { last: m.id === lastId, alts }));
    }
    scrollDown();
  }

  // Every change of what the chat shows (open, new chat, a reply streaming) takes a new view
  // number; a session's messages that arrive after the view moved on are not shown (a reload
  // started before "+ New chat" must not bring the old chat back over the new one).
  function nextView() { state.view = (state.view || 0) + 1; return state.view; }

  async function openSession(id) {
    state.session = id;
    const view = nextView();
    const data = await api("GET", `/api/v1/sessions/${encodeURIComponent(id)}/messages`);
    if (view === state.view) render(data.messages);
    return data.messages;
  }

  // After a stop the server stores the partial reply as the stream closes: wait for it.
  async function settle(id) {
    for (let i = 0; i < 20; i++) {
      const msgs = await openSession(id).catch(() => null);
      if (msgs && !msgs.some((m) => m.status === "pending")) return;
      await new Promise((r) => setTimeout(r, 300));
    }
  }

  function newSession(focus = false) {
    state.session = null;
    nextView();
    render([]);
    if (focus === true) $("#composer-input").focus();
  }

  function newId() {
    return (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random()).replace(/[^a-z0-9]/gi, "").slice(0, 32);
  }

  function options() {
    try { return JSON.parse(localStorage.getItem("companion.options") || "{}"); } catch { return {}; }
  }

  function busy(on) {
    state.busy = on;
    $("#send").hidden = on;
    $("#stop").hidden = !on;
    document.querySelectorAll(".msg .actions button").forEach((b) => { b.disabled = on; });
  }

  // POST a streaming action; tokens go to `onToken`. Returns the done result, or null when
  // stopped. Errors before the first token throw (the caller undoes what it showed).
  async function stream(path, body, onToken) {
    const controller = new AbortController();
    state.stop = () => controller.abort();
    nextView();
    busy(true);
    let result = null;
    try {
      const resp = await fetch(path, {
        method: "POST", signal: controller.signal,
        headers: { "Content-Type": "application/json", ...window.C.authHeaders() },
        body: JSON.stringify({ ...options(), ...body, stream: true }),
      });
      if (resp.status === 401) { window.C.signIn(); throw new Error("Please sign in with your API key."); }
      if (!resp.ok) throw new Error(await window.C.errorText(resp));
      await readSSE(resp, (name, data) => {
        if (name === "token") onToken(data.text);
        else if (name === "done") result = data;
        else if (name === "error") throw new Error(data.error.message);
      });
      return result;
    } catch (e) {
      if (e.name === "AbortError") return null;
      throw e;
    } finally {
      state.stop = null;
      busy(false);
    }
  }

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

  // A streaming bubble: text grows, Markdown re-rendered once per frame.
  function live(li, start = "") {
    let text = start, queued = false;
    li.classList.add("cursor");
    li.setAttribute("aria-busy", "true");
    return (piece) => {
      text += piece;
      li.raw = text;
      if (queued) return;
      queued = true;
      requestAnimationFrame(() => { queued = false; renderMarkdown(li.querySelector(".text"), text); scrollDown(); });
    };
  }

  async function afterReply(sessionId, result) {
    li_done();
    if (result && result.memories_used && window.C.showUsed) window.C.showUsed(result.memories_used);
    if (sessionId) await (result ? openSession(sessionId) : settle(sessionId));
    window.C.refresh();
  }
  function li_done() { document.querySelectorAll('.msg[aria-busy="true"]').forEach((n) => n.removeAttribute("aria-busy")); }

  async function send(text) {
    const fresh = !state.session;
    const sessionId = state.session || newId();
    const mine = bubble({ role: "user", text, created_at: new Date().toISOString() });
    const reply = bubble({ role: "assistant", text: "" });
    $("#messages").append(mine, reply);
    scrollDown();
    try {
      const result = await stream("/api/v1/chat", { message: text, user_id: window.C.userId(), session_id: sessionId }, live(reply));
      state.session = sessionId;
      window.C.setStatus(result ? "" : "Stopped: the partial reply is kept.");
      await afterReply(sessionId, result);
    } catch (e) {
      mine.remove(); reply.remove();
      if (fresh) state.session = null;
      const box = $("#composer-input");
      if (!box.value) box.value = text; // a rejected message goes back to the box, not the chat
      window.C.setStatus(`Not sent: ${e.message}`, true);
    }
  }

  async function regenerate(li, m) {
    const prev = li.raw;
    const text = li.querySelector(".text");
    text.replaceChildren();
    try {
      const result = await stream(`/api/v1/messages/${m.id}/regenerate`, {}, live(li));
      await afterReply(m.session_id || state.session, result);
    } catch (e) {
      renderMarkdown(text, prev); li.classList.remove("cursor");
      window.C.setStatus(`Could not regenerate: ${e.message}`, true);
    }
  }

  async function continueReply(li, m) {
    try {
      const result = await stream(`/api/v1/messages/${m.id}/continue`, {}, live(li, li.raw));
      await afterReply(state.session, result);
    } catch (e) {
      li.classList.remove("cursor");
      window.C.setStatus(`Could not continue: ${e.message}`, true);
    }
  }

  function startEdit(li, m) {
    const box = li.querySelector(".bubble");
    const area = el("textarea", { class: "edit-box", rows: "3", "aria-label": "Edit your message" });
    area.value = li.raw;
    const save = el("button", { type: "button", text: "Save & send" });
    const cancel = el("button", { type: "button", text: "Cancel", onclick: () => openSession(state.session) });
    box.querySelector(".text").replaceChildren(area);
    box.querySelector(".actions").replaceChildren(cancel, save);
    area.focus();
    save.addEventListener("click", async () => {
      const text = area.value.trim();
      if (!text) return;
      while (li.nextSibling) li.nextSibling.remove();
      box.querySelector(".text").textContent = text;
      const reply = bubble({ role: "assistant", text: "" });
      $("#messages").append(reply);
      try {
        const result = await stream(`/api/v1/messages/${m.id}/edit`, { text }, live(reply));
        await afterReply(state.session, result);
      } catch (e) {
        window.C.setStatus(`Could not resend: ${e.message}`, true);
        openSession(state.session);
      }
    });
  }

  // The persona panel reloads after every reply: only a new name or greeting (or an avatar
  // added or removed) redraws the chat, and never under an open edit; a new avatar picture is
  // swapped in place. (A redraw after each reply replaced an edit box the user had just opened.)
  function setPersona(p, avatarUrl) {
    const greeting = p.greeting || "";
    const redraw = persona.name !== p.name || persona.greeting !== greeting || !persona.avatarUrl !== !avatarUrl;
    persona.name = p.name; persona.greeting = greeting; persona.avatarUrl = avatarUrl;
    if (!redraw || state.busy || $("#messages .edit-box")) {
      if (avatarUrl) document.querySelectorAll("#messages li.assistant .avatar img").forEach((img) => { img.src = avatarUrl; });
      return;
    }
    if (state.session) openSession(state.session).catch(() => {}); else render([]);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("#composer").addEventListener("submit", (e) => {
      e.preventDefault();
      const input = $("#composer-input");
      const text = input.value.trim();
      if (!text || state.busy) return;
      input.value = "";
      send(text);
    });
    $("#composer-input").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); $("#composer").requestSubmit(); }
    });
    $("#stop").addEventListener("click", () => state.stop && state.stop());
    document.addEventListener("keydown", (e) => { if (e.key === "Escape" && state.stop) state.stop(); });
  });

  Object.assign(window.C, { openSession, newSession, setPersona, renderMarkdown });
})();
