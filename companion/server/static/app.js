// companion web page: shared state, the API client (with the sign-in key), user switching,
// theme toggle, phone drawers, tabs, dialogs and the toast. Other files add to window.C.
"use strict";

window.C = (() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const USER_RE = /^[A-Za-z0-9_.:@-]{1,64}$/;
  const KEY = "companion.key";
  const state = { session: null, busy: false, me: { auth: false, admin: true, user_id: null } };
  const listeners = { user: [], signin: [] };

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  }

  // Every API call: JSON in and out, the key when signed in; a 401 opens the sign-in.
  async function api(method, path, body, { raw, blob } = {}) {
    const opts = { method, headers: authHeaders() };
    if (raw !== undefined) opts.body = raw;
    else if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const resp = await fetch(path, opts);
    if (resp.status === 401) { signIn(); throw new Error("Please sign in with your API key."); }
    if (!resp.ok) throw new Error(await errorText(resp));
    if (resp.status === 204) return null;
    return blob ? resp.blob() : resp.json();
  }

  async function errorText(resp) {
    const data = await resp.json().catch(() => null);
    return (data && data.error && data.error.message) || `HTTP ${resp.status}`;
  }

  function authHeaders() {
    const key = sessionStorage.getItem(KEY);
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  function userId() { return state.userId || "default"; }

  // Switch user: validate, remember, and let every panel reload.
  function setUser(value, { quiet = false } = {}) {
    const input = $("#user-id");
    const v = String(value || "").trim();
    const ok = USER_RE.test(v);
    input.setAttribute("aria-invalid", String(!ok));
    $("#user-error").textContent = ok ? "" : "User ids are 1–64 letters, digits or _ . : @ -";
    if (!ok) return false;
    input.value = v;
    if (v === state.userId && quiet) return true;
    state.userId = v;
    localStorage.setItem("companion.user", v);
    listeners.user.forEach((fn) => fn(v));
    return true;
  }

  async function whoAmI() {
    state.me = await api("GET", "/api/v1/me");
    $("#sign-out").hidden = !state.me.auth;
    const input = $("#user-id");
    input.readOnly = state.me.auth && !state.me.admin; // a user key acts only for its user
    if (state.me.auth && !state.me.admin) setUser(state.me.user_id);
    return state.me;
  }

  function signIn() {
    const dialog = $("#login");
    if (!dialog.open) dialog.showModal();
    $("#login-key").focus();
  }

  async function submitKey(e) {
    e.preventDefault();
    const key = $("#login-key").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY, key);
    try {
      await whoAmI();
      $("#login").close();
      $("#login-key").value = "";
      $("#login-error").textContent = "";
      if (state.me.admin) setUser(localStorage.getItem("companion.user") || "default");
      listeners.signin.forEach((fn) => fn());
    } catch (err) {
      sessionStorage.removeItem(KEY);
      $("#login-error").textContent = "That key was not accepted. Check it and try again.";
    }
  }

  function signOut() {
    sessionStorage.removeItem(KEY);
    state.session = null;
    $("#messages").replaceChildren();
    signIn();
  }

  function toast(text, action) {
    const t = $("#toast");
    clearTimeout(toast.timer);
    t.replaceChildren(el("span", { text }));
    if (action) {
      t.append(el("button", { type: "button", text: action.label, onclick: () => {
        t.hidden = true; action.run();
      } }));
    }
    t.hidden = false;
    toast.timer = setTimeout(() => { t.hidden = true; }, action ? 8000 : 3000);
  }

  function confirm(text, ok = "Delete") {
    const dialog = $("#confirm");
    $("#confirm-text").textContent = text;
    $("#confirm-ok").textContent = ok;
    dialog.showModal();
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    });
  }

  function setStatus(text, isError = false) {
    const s = $("#status");
    s.textContent = text;
    s.classList.toggle("danger", isError);
  }

  function applyTheme(choice) {
    const dark = choice === "system" ? matchMedia("(prefers-color-scheme: dark)").matches : choice === "dark";
    document.documentElement.dataset.theme = dark ? "dark" : "light";
    document.documentElement.dataset.themeChoice = choice;
    const b = $("#theme-toggle");
    const [icon, label] = { system: ["◐", "Auto"], light: ["☀", "Light"], dark: ["☾", "Dark"] }[choice];
    b.replaceChildren(icon, el("span", { class: "theme-label", text: ` ${label}` }));
    b.setAttribute("aria-label", `Theme: ${choice === "system" ? "follows the system" : choice}. Change theme`);
  }

  function setupTheme() {
    applyTheme(document.documentElement.dataset.themeChoice || "system");
    $("#theme-toggle").addEventListener("click", () => {
      const order = ["system", "light", "dark"];
      const next = order[(order.indexOf(document.documentElement.dataset.themeChoice) + 1) % 3];
      if (next === "system") localStorage.removeItem("companion.theme");
      else localStorage.setItem("companion.theme", next);
      applyTheme(next);
    });
    matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
      if (document.documentElement.dataset.themeChoice === "system") applyTheme("system");
    });
  }

  // Phone layout: sessions and panels are drawers over the chat.
  function setupDrawers() {
    const pairs = [["#open-sessions", "#sessions"], ["#open-panels", "#panels"]];
    const closeAll = () => {
      for (const [b, d] of pairs) { $(d).classList.remove("open"); $(b).setAttribute("aria-expanded", "false"); }
      $("#backdrop").hidden = true;
    };
    for (const [button, drawer] of pairs) {
      $(button).addEventListener("click", () => {
        const open = !$(drawer).classList.contains("open");
        closeAll();
        if (!open) return;
        $(drawer).classList.add("open");
        $(button).setAttribute("aria-expanded", "true");
        $("#backdrop").hidden = false;
        const first = $(drawer).querySelector("button, input");
        if (first) first.focus();
      });
    }
    $("#backdrop").addEventListener("click", closeAll);
    document.querySelectorAll(".close-drawer").forEach((b) => b.addEventListener("click", closeAll));
    document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeAll(); });
    return closeAll;
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

  function when(date) {
    const d = new Date(date);
    const today = new Date().toDateString() === d.toDateString();
    return today ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
      : d.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
  }

  return {
    $, el, api, state, userId, setUser, whoAmI, signIn, submitKey, signOut, toast, confirm,
    setStatus, setupTheme, setupDrawers, setupTabs, authHeaders, errorText, when, USER_RE,
    onUser: (fn) => listeners.user.push(fn), onSignIn: (fn) => listeners.signin.push(fn),
  };
})();
