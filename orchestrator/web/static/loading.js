// The loading page: renders the status board and returns to the requested URL once ready.
// Invariant: only the server declares readiness; the page reloads the URL it was served at.
"use strict";
(function () {
  const WEIGHTS = { state: 0.05, venv: 0.15, requirements: 0.6, marimo: 0.2 };
  const ICONS = { pending: "○", running: "◐", done: "✓", skipped: "✓", failed: "✗" };
  const LABELS = { state: "State volume", venv: "Environment", requirements: "Requirements", marimo: "marimo" };
  const bootId = document.body.dataset.bootId;
  const logEl = document.getElementById("log");
  let leaving = false;
  let stayForDegraded = false;

  function overall(status) {
    let total = 0;
    for (const step of status.steps) {
      const weight = WEIGHTS[step.name] || 0;
      if (step.status === "done" || step.status === "skipped" || step.status === "failed") total += weight;
      else if (step.status === "running") total += weight * (step.progress == null ? 0.3 : step.progress);
    }
    return Math.round(Math.min(1, total) * 100);
  }

  // Seconds left for a running step: from its last recorded duration, else from its progress.
  function remaining(step) {
    if (!step.started_at) return null;
    const elapsed = Date.now() / 1000 - step.started_at;
    if (step.expected_seconds) return Math.max(1, Math.round(step.expected_seconds - elapsed));
    if (step.progress && step.progress > 0.05 && step.progress < 1) {
      return Math.max(1, Math.round((elapsed * (1 - step.progress)) / step.progress));
    }
    return null;
  }

  function describe(status) {
    if (status.phase === "ready") return "Ready: opening marimo…";
    if (status.phase === "degraded") return "marimo is running, but something needs your attention.";
    if (status.phase === "failed") return "marimo could not be started.";
    if (status.phase === "stopping") return "The server is stopping.";
    const running = status.steps.find((s) => s.status === "running");
    return running ? running.message : "Starting…";
  }

  function render(status) {
    const list = document.getElementById("steps");
    list.replaceChildren();
    for (const step of status.steps) {
      const li = document.createElement("li");
      li.className = step.status;
      li.dataset.step = step.name;
      li.dataset.status = step.status;
      const icon = document.createElement("span");
      icon.className = "icon";
      icon.textContent = ICONS[step.status] || "?";
      icon.setAttribute("aria-label", step.status);
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = LABELS[step.name] || step.name;
      const msg = document.createElement("span");
      msg.className = "msg";
      let text = step.message || step.status;
      if (step.status === "running") {
        if (step.progress != null) text += " (" + Math.round(step.progress * 100) + "%)";
        const eta = remaining(step);
        if (eta != null) text += ", about " + eta + " s left";
        if (step.next_attempt_at) {
          const wait = Math.max(0, Math.round(step.next_attempt_at - Date.now() / 1000));
          text += " · attempt " + step.attempt + (step.max_attempts ? " of " + step.max_attempts : "") + ", next in " + wait + " s";
        }
      }
      msg.textContent = text;
      li.append(icon, name, msg);
      list.append(li);
    }
    const percent = status.phase === "ready" ? 100 : overall(status);
    const bar = document.getElementById("bar");
    bar.setAttribute("aria-valuenow", String(percent));
    bar.setAttribute("aria-valuetext", percent + "% " + describe(status));
    bar.classList.toggle("failed", status.phase === "failed");
    document.getElementById("bar-fill").style.width = percent + "%";
    document.getElementById("percent").textContent = percent + "%";
    document.getElementById("phase").textContent = describe(status);
    const warning = document.getElementById("state-warning");
    warning.hidden = !(status.state && status.state.warning);
    warning.textContent = (status.state && status.state.warning) || "";
    const actions = document.getElementById("actions");
    actions.hidden = !(status.phase === "degraded" && status.ready);
    if (status.phase === "failed" || status.phase === "degraded") document.getElementById("log-box").open = true;
    document.body.dataset.phase = status.phase;
  }

  function appendLog(record) {
    const prefix = record.source ? "[" + record.source + "] " : "";
    logEl.append(prefix + record.line + "\n");
    while (logEl.childNodes.length > 400) logEl.removeChild(logEl.firstChild);
    logEl.scrollTop = logEl.scrollHeight;
  }

  function leave() {
    if (leaving) return;
    leaving = true;
    window.location.reload();
  }

  function onStatus(status) {
    render(status);
    if (!status.ready) { stayForDegraded = stayForDegraded || status.phase === "starting"; return; }
    // A degraded start that this page watched stays here so the user reads what failed.
    if (status.phase === "degraded" && stayForDegraded) return;
    leave();
  }

  document.getElementById("open-anyway").addEventListener("click", leave);

  try {
    const initial = JSON.parse(document.getElementById("initial-status").textContent);
    stayForDegraded = initial.phase === "starting";
    render(initial);
  } catch (e) { /* the event stream will bring the status */ }

  function connect() {
    const source = new EventSource("/-/events");
    source.addEventListener("status", (event) => {
      const status = JSON.parse(event.data);
      if (bootId && status.boot_id !== bootId) { document.body.dataset.bootId = status.boot_id; }
      onStatus(status);
    });
    source.addEventListener("log", (event) => appendLog(JSON.parse(event.data)));
    source.onerror = () => { document.getElementById("phase").textContent = "Reconnecting to the server…"; };
  }
  connect();
})();
