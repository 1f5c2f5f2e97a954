// "Opening your notebook…" over marimo's page until its editor has rendered (added by the
// proxy's HTML transform with the panel, orchestrator/web/panel.py).
// marimo's page is an empty <div id="root"> until its scripts (some 170 files) have loaded and
// run, then a frame without cells until the notebook's session is up: seconds of a blank or
// half-drawn page. The words are in the document itself, outside marimo's root (so they show
// from the first paint and marimo's rendering never removes them); this script removes them.
// Invariants: removed as soon as marimo shows a cell (an editor, an output, an app's cell); on
// a page that is not a notebook (marimo's file list) as soon as marimo has drawn anything; never
// kept more than GIVE_UP seconds after marimo has drawn anything, nor LIMIT seconds in all, so a
// page that never shows a cell (an error, an empty app) is never hidden for long. It never
// touches marimo's DOM.
"use strict";
(function () {
  const cover = document.getElementById("mo-orch-opening");
  if (!cover) return;
  const GIVE_UP = 30;
  const LIMIT = 90;
  const started = Date.now();
  const NOTEBOOK = new URLSearchParams(window.location.search).has("file");
  // A cell drawn (marimo 0.25): in the editor its code editor or an output (its cell's frame
  // comes earlier, still blank); in run mode an app's cell, which holds its ``#output-<id>``.
  const RUN = !!document.currentScript && document.currentScript.dataset.mode === "run";
  const RENDERED = RUN ? ".marimo-cell[data-cell-id]" : "[data-testid=cell-editor], [data-cell-role=output]";
  const elapsedNode = cover.querySelector("[data-opening=elapsed]");
  let drawnAt = null;
  let observer = null;
  let timer = null;

  function remove() {
    if (observer) observer.disconnect();
    if (timer) clearInterval(timer);
    cover.remove();
  }

  function check() {
    if (!cover.isConnected) return true;
    const root = document.getElementById("root");
    const drawn = !!root && root.childElementCount > 0;
    if (drawn && drawnAt === null) drawnAt = Date.now();
    const seconds = Math.floor((Date.now() - started) / 1000);
    if (document.querySelector(RENDERED) || (drawn && !NOTEBOOK)
        || (drawnAt !== null && Date.now() - drawnAt > GIVE_UP * 1000) || seconds > LIMIT) {
      remove();
      return true;
    }
    if (elapsedNode && seconds >= 2) elapsedNode.textContent = seconds + " s";
    return false;
  }

  function start() {
    if (!NOTEBOOK) {
      const title = cover.querySelector("h1");
      if (title) title.textContent = "Opening marimo…";
    }
    if (check()) return;
    let queued = false;
    observer = new MutationObserver(() => {
      if (queued) return;
      queued = true;
      requestAnimationFrame(() => { queued = false; check(); });
    });
    observer.observe(document.body || document.documentElement, { childList: true, subtree: true });
    timer = setInterval(check, 1000);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
