// companion web page: the sessions list (open, rename, delete) and search across your messages.
"use strict";

(() => {
  const { $, el, api, state } = window.C;
  const enc = encodeURIComponent;

  async function loadSessions() {
    const sessions = await api("GET", `/api/v1/sessions?user_id=${enc(window.C.userId())}`);
    const list = $("#session-list");
    list.replaceChildren(...sessions.map(item));
    if (!sessions.length) list.append(el("li", { class: "muted", text: "No chats yet." }));
  }

  function item(s) {
    const title = s.title || "Untitled chat";
    const li = el("li", { class: "session", "aria-current": String(s.id === state.session), "data-session": s.id });
    const open = el("button", { type: "button", class: "open", title, onclick: () => openFromList(s.id) },
      title, el("small", { text: window.C.when(s.updated_at) }));
    const rename = el("button", { type: "button", class: "tool", text: "✎", "aria-label": `Rename chat: ${title}`, onclick: () => startRename(li, s) });
    const del = el("button", { type: "button", class: "tool", text: "✕", "aria-label": `Delete chat: ${title}`, onclick: () => remove(s) });
    li.append(open, rename, del);
    return li;
  }

  async function openFromList(id) {
    closeDrawerOnPhone();
    await window.C.openSession(id);
    loadSessions().catch(() => {});
  }

  function closeDrawerOnPhone() { if (window.C.closeDrawers) window.C.closeDrawers(); }

  function startRename(li, s) {
    const input = el("input", { "aria-label": "New chat title", maxlength: "255" });
    input.value = s.title || "";
    const done = async (save) => {
      const title = input.value.trim();
      if (save && title && title !== s.title) {
        try { await api("PATCH", `/api/v1/sessions/${enc(s.id)}`, { title }); }
        catch (e) { window.C.toast(`Not renamed: ${e.message}`); }
      }
      loadSessions().catch(() => {});
    };
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") { e.preventDefault(); done(true); }
      if (e.key === "Escape") { e.stopPropagation(); done(false); }
    });
    input.addEventListener("blur", () => done(true), { once: true });
    li.replaceChildren(input);
    input.focus();
    input.select();
  }

  async function remove(s) {
    const ok = await window.C.confirm(`Delete the chat “${s.title || "Untitled chat"}” and all its messages? This cannot be undone.`);
    if (!ok) return;
    try {
      await api("DELETE", `/api/v1/sessions/${enc(s.id)}`);
      if (state.session === s.id) window.C.newSession();
      window.C.toast("Chat deleted.");
    } catch (e) { window.C.toast(`Not deleted: ${e.message}`); }
    loadSessions().catch(() => {});
  }

  // A snippet's \u0002...\u0003 marks become <mark> (as text nodes: nothing is parsed as HTML).
  function snippet(text) {
    const span = el("span");
    text.split("\u0002").forEach((part, i) => {
      if (i === 0) { span.append(part); return; }
      const [hit, rest] = part.split("\u0003");
      span.append(el("mark", { text: hit }), rest || "");
    });
    return span;
  }

  let searchTimer = null;
  async function search() {
    const q = $("#search-input").value.trim();
    const out = $("#search-results");
    if (!q) { out.hidden = true; $("#session-list").hidden = false; return; }
    try {
      const data = await api("GET", `/api/v1/users/${enc(window.C.userId())}/search?q=${enc(q)}`);
      out.replaceChildren(...data.hits.map((h) => el("li", {},
        el("button", { type: "button", onclick: () => openFromList(h.session_id) },
          snippet(h.snippet), el("small", { text: `${h.role === "user" ? "You" : "Reply"} · ${h.session_title || "Untitled chat"} · ${window.C.when(h.created_at)}` })))));
      if (!data.hits.length) out.append(el("li", { class: "muted", text: `Nothing matches “${q}”.` }));
    } catch (e) {
      out.replaceChildren(el("li", { class: "danger", text: e.message }));
    }
    out.hidden = false;
    $("#session-list").hidden = true;
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("#new-session").addEventListener("click", () => { closeDrawerOnPhone(); window.C.newSession(true); loadSessions().catch(() => {}); });
    $("#search-form").addEventListener("submit", (e) => { e.preventDefault(); search(); });
    $("#search-input").addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(search, 250); });
  });

  Object.assign(window.C, { loadSessions });
})();
