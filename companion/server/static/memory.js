// companion web page: the memory panel (what is remembered, with importance, topics and dates;
// edit; delete with confirmation and undo) and why memories were used for the last reply.
"use strict";

(() => {
  const { $, el, api } = window.C;
  const enc = encodeURIComponent;
  const base = () => `/api/v1/users/${enc(window.C.userId())}/memories`;

  function importance(value) {
    const pct = Math.round((value || 0) * 100);
    return el("span", { class: "importance", role: "img", "aria-label": `importance ${pct}%`, title: `importance ${pct}%` },
      el("span", { style: `width:${pct}%` }));
  }

  function day(iso) { return new Date(iso).toLocaleDateString([], { dateStyle: "medium" }); }

  function facts(m) {
    const line = el("span", { class: "facts" }, importance(m.importance), ` ${Math.round(m.importance * 100)}% important`);
    for (const t of m.topics || []) line.append(" ", el("span", { class: "chip", text: t }));
    const dates = m.updated_at && m.updated_at.slice(0, 10) !== m.created_at.slice(0, 10)
      ? `added ${day(m.created_at)}, updated ${day(m.updated_at)}` : `added ${day(m.created_at)}`;
    line.append(el("span", { text: ` · ${dates}` }));
    if (m.use_count) line.append(el("span", { text: ` · used ${m.use_count}×` }));
    return line;
  }

  // Recall's score parts in words: which words matched, how close in meaning, importance, age.
  function why(r) {
    const parts = [];
    const terms = r.matched_terms || [];
    if (terms.length) parts.push(`you used the words ${terms.map((t) => `“${t}”`).join(", ")}`);
    if ((r.similarity || 0) >= 0.2) parts.push(`close in meaning (${Math.round(r.similarity * 100)}%)`);
    if ((r.importance || 0) >= 0.7) parts.push("it is important");
    if ((r.recency || 0) >= 0.8) parts.push("it is recent");
    else if (typeof r.recency === "number" && r.recency < 0.3) parts.push("though it is old");
    return parts.length ? `Used because ${parts.join(", ")}.` : "Used as a close match.";
  }

  function memoryItem(m) {
    const li = el("li", { "data-memory-id": m.id });
    const body = el("div", { class: "body" }, el("span", { class: "mtext", text: m.text }), facts(m));
    li.append(body,
      el("button", { type: "button", text: "Edit", "aria-label": `Edit memory: ${m.text}`, onclick: () => edit(li, m) }),
      el("button", { type: "button", text: "Delete", "aria-label": `Delete memory: ${m.text}`, onclick: () => remove(m) }));
    return li;
  }

  function usedItem(m) {
    const r = m.reasons || {};
    return el("li", { "data-memory-id": m.id },
      el("div", { class: "body" }, el("span", { text: m.text }),
        el("span", { class: "why", title: `relevance score ${m.score}`, text: why(r) })));
  }

  async function loadMemories() {
    const list = $("#memory-list");
    try {
      const data = await api("GET", `${base()}?limit=200`);
      list.replaceChildren(...data.memories.map(memoryItem));
      if (!data.memories.length) list.append(el("li", { class: "muted", text: "Nothing yet: tell me about yourself, or add something above." }));
    } catch (e) {
      list.replaceChildren(el("li", { class: "muted", text: e.message }));
    }
  }

  function edit(li, m) {
    const text = el("input", { "aria-label": "Memory text", maxlength: "1000" });
    text.value = m.text;
    const imp = el("input", { type: "range", min: "0", max: "1", step: "0.05", "aria-label": "Importance" });
    imp.value = String(m.importance);
    const out = el("output", { text: `${Math.round(m.importance * 100)}%` });
    imp.addEventListener("input", () => { out.textContent = `${Math.round(imp.value * 100)}%`; });
    const save = el("button", { type: "button", text: "Save", onclick: async () => {
      const changes = {};
      if (text.value.trim() && text.value.trim() !== m.text) changes.text = text.value.trim();
      if (Number(imp.value) !== m.importance) changes.importance = Number(imp.value);
      if (Object.keys(changes).length) {
        try { await api("PATCH", `${base()}/${m.id}`, changes); }
        catch (e) { window.C.toast(`Not saved: ${e.message}`); }
      }
      loadMemories();
    } });
    const cancel = el("button", { type: "button", text: "Cancel", onclick: loadMemories });
    li.replaceChildren(el("div", { class: "body stack" }, text, el("label", { class: "row" }, "Importance", imp, out), el("div", { class: "row" }, save, cancel)));
    text.focus();
  }

  async function remove(m) {
    if (!(await window.C.confirm(`Forget “${m.text}”?`, "Forget"))) return;
    try {
      await api("DELETE", `${base()}/${m.id}`);
    } catch (e) { window.C.toast(`Not deleted: ${e.message}`); return; }
    loadMemories();
    window.C.toast("Memory forgotten.", { label: "Undo", run: async () => {
      await api("POST", base(), { text: m.text, importance: m.importance, topics: m.topics || [] });
      loadMemories();
    } });
  }

  function showUsed(list) {
    const ul = $("#used-memories");
    ul.replaceChildren(...list.map(usedItem));
    if (!list.length) ul.append(el("li", { class: "muted", text: "No memories were used." }));
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("#memory-add").addEventListener("submit", async (e) => {
      e.preventDefault();
      const text = $("#memory-new").value.trim();
      if (!text) return;
      try {
        await api("POST", base(), { text });
        $("#memory-new").value = "";
      } catch (err) { window.C.toast(`Not added: ${err.message}`); }
      loadMemories();
    });
  });

  Object.assign(window.C, { loadMemories, showUsed });
})();
