// companion web page: the persona panel. Choose, edit every Character Card V2 field companion
// uses, import (overwrite or rename when the id is taken), export as PNG or JSON, delete.
"use strict";

(() => {
  const { $, el, api } = window.C;
  const enc = encodeURIComponent;
  const TRAITS = ["warmth", "humor", "formality", "verbosity", "curiosity", "playfulness", "empathy", "assertiveness"];
  const FIELDS = [
    ["name", "Name", "input", "What the companion is called."],
    ["description", "Description", "textarea", "Who they are; {{char}} and {{user}} work here."],
    ["speaking_style", "Personality / speaking style", "textarea", "e.g. short sentences, dry humour"],
    ["scenario", "Scenario", "textarea", "Where and when the chat takes place."],
    ["greeting", "First message", "textarea", "Shown when a new chat opens, e.g. Hello, {{user}}!"],
    ["example_lines", "Example lines (one per line, up to 8)", "textarea", "Things they might say."],
    ["system_prompt", "System prompt (optional)", "textarea", "Leave empty to write it from the fields and traits."],
    ["tags", "Tags (comma-separated)", "input", "e.g. friendly, sea"],
  ];
  let personas = [];
  let editing = null; // the persona in the form; null = a new one
  let avatarUrl = null;

  function build() {
    const panel = $("#panel-persona");
    const select = el("select", { id: "persona-select" });
    const form = el("form", { id: "persona-form", class: "stack" });
    for (const [name, label, kind, hint] of FIELDS) {
      const input = el(kind, { name, placeholder: hint, rows: kind === "textarea" ? "2" : undefined, required: name === "name" || undefined });
      form.append(el("label", {}, label, input));
    }
    const traits = el("fieldset", { id: "persona-traits" }, el("legend", { text: "Traits (0 = low, 0.5 = neutral, 1 = high)" }));
    for (const t of TRAITS) {
      const range = el("input", { type: "range", min: "0", max: "1", step: "0.05", name: `trait-${t}`, "aria-label": t });
      const out = el("output", { text: "0.5" });
      range.addEventListener("input", () => { out.textContent = Number(range.value).toFixed(2); });
      traits.append(el("label", {}, el("span", { text: t }), range, out));
    }
    form.append(traits,
      el("p", { id: "persona-note", class: "note", hidden: true }),
      el("div", { class: "row" }, el("button", { type: "submit", id: "persona-save", text: "Save persona" }),
        el("button", { type: "button", id: "persona-new", text: "New persona", onclick: () => fill(null) }),
        el("button", { type: "button", id: "persona-delete", class: "danger-btn", text: "Delete", onclick: remove })));
    form.addEventListener("submit", save);
    select.addEventListener("change", () => choose(select.value));
    const file = el("input", { id: "card-file", type: "file", accept: ".png,.json,application/json,image/png" });
    file.addEventListener("change", () => importCard(file));
    panel.replaceChildren(
      el("div", { class: "persona-head" }, el("div", { id: "persona-avatar", class: "avatar", "aria-hidden": "true" }),
        el("div", {}, el("label", { for: "persona-select", text: "Talking to" }), select, el("p", { id: "relationship", class: "muted" }))),
      form,
      el("h3", { text: "Character cards" }),
      el("div", { class: "row" },
        el("button", { type: "button", id: "export-png", text: "Export PNG", onclick: () => exportCard("png") }),
        el("button", { type: "button", id: "export-json", text: "Export JSON", onclick: () => exportCard("json") })),
      el("label", { class: "file-pick", for: "card-file", text: "Import a card (PNG or JSON, SillyTavern V2)" }), file,
      el("div", { id: "import-conflict", class: "row", hidden: true }),
      el("p", { id: "persona-status", class: "muted", role: "status" }));
  }

  function say(text, isError = false) {
    const s = $("#persona-status");
    s.textContent = text;
    s.classList.toggle("danger", isError);
  }

  function fill(p) {
    const f = $("#persona-form");
    editing = p;
    for (const [name] of FIELDS) {
      let v = p ? p[name] : "";
      if (name === "example_lines") v = (v || []).join("\n");
      if (name === "tags") v = (v || []).join(", ");
      if (name === "system_prompt" && p && p.id === "default") v = ""; // the setting, not a copy
      f.elements[name].value = v || "";
    }
    for (const t of TRAITS) {
      const v = p && p.traits && p.traits[t] !== undefined ? p.traits[t] : 0.5;
      f.elements[`trait-${t}`].value = String(v);
      f.elements[`trait-${t}`].nextElementSibling.textContent = Number(v).toFixed(2);
    }
    const builtIn = p && p.id === "default";
    $("#persona-note").hidden = !builtIn;
    $("#persona-note").textContent = builtIn
      ? "Nova is built in and follows the server's system_prompt setting. Your changes are saved as a new persona." : "";
    $("#persona-save").textContent = builtIn || !p ? "Save as new persona" : "Save persona";
    $("#persona-delete").hidden = !p || builtIn;
  }

  function body() {
    const f = $("#persona-form");
    const out = { traits: {} };
    for (const [name] of FIELDS) out[name] = f.elements[name].value;
    out.name = out.name.trim();
    out.example_lines = out.example_lines.split("\n").map((x) => x.trim()).filter(Boolean).slice(0, 8);
    out.tags = out.tags.split(",").map((x) => x.trim()).filter(Boolean).slice(0, 16);
    if (!out.system_prompt.trim()) delete out.system_prompt;
    for (const t of TRAITS) out.traits[t] = Number(f.elements[`trait-${t}`].value);
    return out;
  }

  async function loadPersonas() {
    const [all, mine] = await Promise.all([
      api("GET", "/api/v1/personas"),
      api("GET", `/api/v1/users/${enc(window.C.userId())}/persona`),
    ]);
    personas = all.personas;
    const select = $("#persona-select");
    select.replaceChildren(...personas.map((p) => new Option(p.name, p.id, false, p.id === mine.persona.id)));
    select.value = mine.persona.id;
    const rel = mine.relationship;
    $("#relationship").textContent = `${rel.stage} · familiarity ${Math.round(rel.familiarity * 100)}% · affinity ${rel.affinity.toFixed(2)}`;
    const current = personas.find((p) => p.id === mine.persona.id) || mine.persona;
    fill(current);
    await showAvatar(current);
  }

  async function showAvatar(p) {
    if (avatarUrl) URL.revokeObjectURL(avatarUrl);
    avatarUrl = null;
    if (p.avatar) {
      const blob = await api("GET", `/api/v1/personas/${enc(p.id)}/avatar`, undefined, { blob: true }).catch(() => null);
      if (blob) avatarUrl = URL.createObjectURL(blob);
    }
    const box = $("#persona-avatar");
    box.replaceChildren(avatarUrl ? el("img", { src: avatarUrl, alt: "" }) : p.name.slice(0, 1).toUpperCase());
    window.C.setPersona(p, avatarUrl);
  }

  async function choose(id) {
    try {
      await api("PUT", `/api/v1/users/${enc(window.C.userId())}/persona`, { persona_id: id });
      await loadPersonas();
      window.C.newSession(); // a new chat, so the persona's first message shows
      say(`Now talking to ${personas.find((p) => p.id === id).name}.`);
    } catch (e) { say(e.message, true); }
  }

  async function save(e) {
    e.preventDefault();
    const data = body();
    try {
      const stored = editing && editing.id !== "default";
      const saved = stored ? await api("PATCH", `/api/v1/personas/${enc(editing.id)}`, data)
        : await api("POST", "/api/v1/personas", data);
      await api("PUT", `/api/v1/users/${enc(window.C.userId())}/persona`, { persona_id: saved.id });
      await loadPersonas();
      say(`Saved ${saved.name}.`);
    } catch (err) { say(err.message, true); }
  }

  async function remove() {
    if (!editing || editing.id === "default") return;
    if (!(await window.C.confirm(`Delete the persona ${editing.name}? Its users go back to Nova.`))) return;
    try {
      await api("DELETE", `/api/v1/personas/${enc(editing.id)}`);
      say(`Deleted ${editing.name}.`);
      await loadPersonas();
    } catch (e) { say(e.message, true); }
  }

  async function importCard(input, onConflict = "refuse") {
    const file = input.files[0];
    if (!file) return;
    const conflict = $("#import-conflict");
    conflict.hidden = true;
    try {
      const made = await api("POST", `/api/v1/personas/import?on_conflict=${onConflict}`, undefined, { raw: await file.arrayBuffer() });
      await api("PUT", `/api/v1/users/${enc(window.C.userId())}/persona`, { persona_id: made.id });
      input.value = "";
      await loadPersonas();
      window.C.newSession();
      say(`Imported ${made.name}.`);
    } catch (e) {
      if (/exists already/.test(e.message)) {
        say(`${e.message.split(":")[0]}.`, true);
        conflict.replaceChildren(
          el("button", { type: "button", text: "Overwrite it", onclick: () => importCard(input, "overwrite") }),
          el("button", { type: "button", text: "Import as a copy", onclick: () => importCard(input, "rename") }));
        conflict.hidden = false;
      } else {
        say(`Import failed: ${e.message}`, true);
        input.value = "";
      }
    }
  }

  async function exportCard(format) {
    const p = editing || personas[0];
    try {
      const blob = await api("GET", `/api/v1/personas/${enc(p.id)}/card?format=${format}`, undefined, { blob: true });
      const a = el("a", { href: URL.createObjectURL(blob), download: `${p.id}.${format}` });
      document.body.append(a); a.click(); a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 5000);
      say(`Exported ${p.name} as ${format.toUpperCase()}.`);
    } catch (e) { say(e.message, true); }
  }

  document.addEventListener("DOMContentLoaded", build);
  Object.assign(window.C, { loadPersonas });
})();
