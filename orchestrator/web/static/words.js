// The words the loading page (loading.js) and the Environment panel (panel.js) use for the
// startup steps, in one place: each step's name for users, what it says in plain words when
// the server's own message holds internals, and the rule that tells such a message.
// Invariants: loaded before either script (a plain <script> before loading.js; a deferred tag
// before panel.js's, and deferred scripts run in document order); defines one global and reads
// nothing. orchestrator/web/handlers.py's no-JavaScript page applies the same rule (_INTERNAL).
"use strict";
window.__marimoOrchestratorWords = (function () {
  const LABELS = { state: "Storage", venv: "Python", requirements: "Python packages", marimo: "marimo" };
  const PLAIN = {
    state: { running: "Waiting for the deployment's storage", done: "Packages are saved on the deployment's storage",
      failed: "The deployment's storage could not be used" },
    venv: { running: "Preparing Python", done: "Python is ready", skipped: "Python is ready", failed: "Python could not be prepared" },
    requirements: { running: "Installing Python packages", done: "Python packages installed", skipped: "Nothing to install",
      failed: "The Python packages could not be installed" },
    marimo: { running: "Starting marimo", done: "marimo is running", failed: "marimo could not be started" },
  };
  // A server message meant for us (a path, a pid, the venv) stays under "Details"; the step
  // then says what it does in plain words. A failed step's message is the reason, written for
  // the user (the file and line, the full disk, the URL that could not be fetched): always said.
  const INTERNAL = /(^|[\s(:'"])\/[^\s]|\bpid\b|\bvenvs?\b|\bmanifest\b|\bsite-packages\b|\.pth\b/i;
  function plainMessage(step) {
    const message = step.message || "";
    const fallback = (PLAIN[step.name] || {})[step.status] || "";
    if (message && step.status === "failed") return message;
    return !message || INTERNAL.test(message) ? fallback : message;
  }
  return Object.freeze({ LABELS, PLAIN, plainMessage });
})();
