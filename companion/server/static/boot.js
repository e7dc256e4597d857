// companion web page: start-up. Theme, tabs, drawers, sign-in, the user field; every panel
// reloads when the user changes or someone signs in.
"use strict";

(() => {
  const C = window.C;
  const { $ } = C;

  function refresh() {
    C.loadSessions().catch((e) => C.setStatus(e.message, true));
    C.loadMemories();
    C.loadPersonas().catch(() => {});
    C.loadStats();
  }

  function switchUser() {
    const before = C.userId();
    if (!C.setUser($("#user-id").value)) return;
    if (C.userId() !== before) C.setStatus(`Now chatting as ${C.userId()}.`);
  }

  async function start() {
    try {
      await C.whoAmI();
    } catch {
      return; // 401: the sign-in dialog is open; signing in starts the page
    }
    if (!C.state.me.auth || C.state.me.admin) C.setUser(localStorage.getItem("companion.user") || "default");
  }

  document.addEventListener("DOMContentLoaded", () => {
    C.setupTheme();
    C.setupTabs();
    C.closeDrawers = C.setupDrawers();
    C.refresh = refresh;
    C.onUser(() => { C.newSession(); refresh(); });
    $("#login-form").addEventListener("submit", C.submitKey);
    $("#login").addEventListener("cancel", (e) => e.preventDefault()); // no page without a key
    $("#sign-out").addEventListener("click", C.signOut);
    $("#user-form").addEventListener("submit", (e) => { e.preventDefault(); switchUser(); });
    $("#user-id").addEventListener("change", switchUser);
    start();
    setInterval(() => { if (!document.hidden) C.loadStats(); }, 5000);
  });
})();
