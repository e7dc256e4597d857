// companion web page: the memory and persona panels.
"use strict";

(() => {
  const $ = (sel) => document.querySelector(sel);
  const TRAITS = ["warmth", "humor", "formality", "verbosity", "curiosity", "playfulness", "empathy", "assertiveness"];
  const enc = encodeURIComponent;
  const userId = () => {
    const v = $("#user-id").value.trim();
    return /^[A-Za-z0-9_.:@-]{1,64}$/.test(v) ? v : "default";
  };
  let personas = [];
  let editing = null; // persona id being edited; null = a new one

  async function call(method, path, body, raw) {
    const opts = { method, headers: {} };
    if (raw !== undefined) opts.body = raw;
    else if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const resp = await fetch(path, opts);
    const data = resp.status === 204 ? null : await resp.json().catch(() => null);
    if (!resp.ok) throw new Error((data && data.error && data.error.message) || `HTTP ${resp.status}`);
    return data;
  }

  function say(text, isError = false) {
    const el = $("#persona-status");
    el.textContent = text;
    el.classList.toggle("danger", isError);
  }

  function memoryItem(m, editable) {
    const li = document.createElement("li");
    li.dataset.memoryId = m.id;
    const text = document.createElement("span");
    text.textContent = m.text;
    if (m.reasons) {
      const why = document.createElement("small");
      why.className = "why";
      const r = m.reasons || {};
      const parts = ["similarity", "text_match", "importance", "recency"]
        .filter((k) => typeof r[k] === "number").map((k) => `${k.replace("_", " ")} ${r[k]}`);
      why.textContent = `score ${m.score} · ${parts.join(" · ")}`;
      text.append(why);
    }
    li.append(text);
    if (editable) {
      const edit = document.createElement("button");
      edit.type = "button";
      edit.textContent = "Edit";
      edit.setAttribute("aria-label", `Edit memory: ${m.text}`);
      edit.addEventListener("click", () => editMemory(m));
      const del = document.createElement("button");
      del.type = "button";
      del.textContent = "Delete";
      del.setAttribute("aria-label", `Delete memory: ${m.text}`);
      del.addEventListener("click", () => deleteMemory(m.id));
      li.append(edit, del);
    }
    return li;
  }

  async function loadMemories() {
    const data = await call("GET", `/api/v1/users/${enc(userId())}/memories`);
    const list = $("#memory-list");
    list.replaceChildren(...data.memories.map((m) => memoryItem(m, true)));
    if (!data.memories.length) {
      const li = document.createElement("li");
      li.textContent = "Nothing yet: tell me about yourself.";
      list.append(li);
    }
  }

  async function editMemory(m) {
    const text = window.prompt("Edit memory", m.text);
    if (text === null || !text.trim() || text === m.text) return;
    await call("PATCH", `/api/v1/users/${enc(userId())}/memories/${m.id}`, { text: text.trim() });
    loadMemories();
  }

  async function deleteMemory(id) {
    await call("DELETE", `/api/v1/users/${enc(userId())}/memories/${id}`);
    document.querySelectorAll(`[data-memory-id="${id}"]`).forEach((el) => el.remove());
    loadMemories();
  }

  function showUsed(list) {
    const ul = $("#used-memories");
    ul.replaceChildren(...list.map((m) => memoryItem(m, false)));
    if (!list.length) {
      const li = document.createElement("li");
      li.textContent = "No memories were used.";
      ul.append(li);
    }
  }

  function traitInputs() {
    const fs = $("#persona-traits");
    for (const t of TRAITS) {
      const label = document.createElement("label");
      label.textContent = t;
      const input = document.createElement("input");
      Object.assign(input, { type: "number", min: "0", max: "1", step: "0.05", name: `trait-${t}` });
      label.append(input);
      fs.append(label);
    }
  }

  function fillForm(p) {
    const f = $("#persona-form");
    editing = p ? p.id : null;
    f.elements.name.value = p ? p.name : "";
    f.elements.description.value = p ? p.description : "";
    f.elements.speaking_style.value = p ? p.speaking_style : "";
    for (const t of TRAITS) f.elements[`trait-${t}`].value = p && p.traits[t] !== undefined ? p.traits[t] : "";
  }

  async function loadPersonas() {
    const [all, mine] = await Promise.all([
      call("GET", "/api/v1/personas"),
      call("GET", `/api/v1/users/${enc(userId())}/persona`),
    ]);
    personas = all.personas;
    const select = $("#persona-select");
    select.replaceChildren(...personas.map((p) => new Option(p.name, p.id, false, p.id === mine.persona.id)));
    const rel = mine.relationship;
    $("#relationship").textContent = `Relationship: ${rel.stage} (familiarity ${rel.familiarity.toFixed(2)}, affinity ${rel.affinity.toFixed(2)})`;
    fillForm(personas.find((p) => p.id === mine.persona.id));
  }

  async function savePersona(e) {
    e.preventDefault();
    const f = e.target;
    const traits = {};
    for (const t of TRAITS) {
      const v = f.elements[`trait-${t}`].value;
      if (v !== "") traits[t] = Number(v);
    }
    const body = { name: f.elements.name.value.trim(), description: f.elements.description.value, speaking_style: f.elements.speaking_style.value, traits };
    try {
      const saved = editing && editing !== "default"
        ? await call("PATCH", `/api/v1/personas/${enc(editing)}`, body)
        : await call("POST", "/api/v1/personas", body);
      await call("PUT", `/api/v1/users/${enc(userId())}/persona`, { persona_id: saved.id });
      say(`Saved ${saved.name}.`);
      loadPersonas();
    } catch (err) { say(err.message, true); }
  }

  async function importCard(e) {
    const file = e.target.files[0];
    if (!file) return;
    try {
      const made = await call("POST", "/api/v1/personas/import", undefined, await file.arrayBuffer());
      await call("PUT", `/api/v1/users/${enc(userId())}/persona`, { persona_id: made.id });
      say(`Imported ${made.name}.`);
      loadPersonas();
    } catch (err) { say(`Import failed: ${err.message}`, true); }
    e.target.value = "";
  }

  function refresh() {
    loadMemories().catch(() => {});
    loadPersonas().catch(() => {});
  }

  document.addEventListener("DOMContentLoaded", () => {
    traitInputs();
    $("#memory-add").addEventListener("submit", async (e) => {
      e.preventDefault();
      const text = $("#memory-new").value.trim();
      if (!text) return;
      await call("POST", `/api/v1/users/${enc(userId())}/memories`, { text });
      $("#memory-new").value = "";
      loadMemories();
    });
    $("#persona-select").addEventListener("change", async (e) => {
      await call("PUT", `/api/v1/users/${enc(userId())}/persona`, { persona_id: e.target.value });
      loadPersonas();
    });
    $("#persona-form").addEventListener("submit", savePersona);
    $("#persona-new").addEventListener("click", () => fillForm(null));
    $("#card-file").addEventListener("change", importCard);
    refresh();
  });

  window.companionPanels = { refresh, showUsed };
})();
