// companion web page: the theme, set before the page paints (system preference or the toggle).
"use strict";
(() => {
  const saved = localStorage.getItem("companion.theme"); // "light" | "dark" | null (system)
  const dark = saved ? saved === "dark" : matchMedia("(prefers-color-scheme: dark)").matches;
  document.documentElement.dataset.theme = dark ? "dark" : "light";
  document.documentElement.dataset.themeChoice = saved || "system";
})();
