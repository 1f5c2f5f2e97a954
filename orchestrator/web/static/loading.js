// The loading page: renders the status board and returns to the requested URL once ready.
// Invariants: only the server declares readiness (the page reloads the URL it was served at);
// the page keeps working while the orchestrator restarts under it (new boot_id) and signs the
// user in again if their session ends.
"use strict";
(function () {
  const WEIGHTS = { state: 0.05, venv: 0.15, requirements: 0.6, marimo: 0.2 };
  const ICONS = { pending: "○", running: "◐", done: "✓", skipped: "✓", failed: "✗" };
  const STATES = { pending: "Waiting", running: "In progress", done: "Done", skipped: "Skipped", failed: "Failed" };
  const LABELS = { state: "State volume", venv: "Environment", requirements: "Requirements", marimo: "marimo" };
  const EXPLAIN = {
    state: "The persistent state volume could not be used, so a temporary folder is used: packages installed now will not persist across restarts.",
    venv: "The virtual environment could not be prepared, so marimo runs without its Install button.",
    requirements: "The Python packages could not be installed. marimo can still run: fix the line named below (the install runs again by itself once the file is saved), or open marimo and install what you need from there.",
    marimo: "marimo could not be started. Its last output is in the log below.",
  };
  const $ = (id) => document.getElementById(id);
  // Served at /-/loading itself (a direct link, the panel's "Status page"): a status page that
  // stays, whatever marimo's state, with a button into marimo instead of a bounce.
  const STANDALONE = window.location.pathname.startsWith("/-/");
  const logEl = $("log");
  let bootId = document.body.dataset.bootId;
  let leaving = false;
  let watchedStart = false;
  let latest = null;
  let pending = null; // a restart the user asked for here, until the status shows it done

  // Per running step (name and start), the earliest moment it was estimated to end: a new
  // estimate can bring it closer, never push it back, so the ETA shown never rises.
  const deadlines = new Map();

  function remaining(step) {
    if (!step.started_at) return null;
    const now = Date.now() / 1000;
    const elapsed = now - step.started_at;
    let estimate = null;
    if (step.progress && step.progress > 0.05 && step.progress < 1) {
      estimate = (elapsed * (1 - step.progress)) / step.progress;
    } else if (step.expected_seconds) {
      estimate = step.expected_seconds - elapsed; // from past runs
    }
    const key = step.name + "@" + step.started_at;
    let deadline = deadlines.get(key);
    if (estimate != null) {
      deadline = deadline == null ? now + estimate : Math.min(deadline, now + estimate);
      deadlines.set(key, deadline);
    }
    if (deadline == null) return null;
    const left = Math.round(deadline - now);
    return left >= 1 ? left : null; // past the estimate: no number rather than a wrong one
  }

  function overall(status) {
    let total = 0;
    for (const step of status.steps) {
      const weight = WEIGHTS[step.name] || 0;
      if (step.status === "done" || step.status === "skipped" || step.status === "failed") total += weight;
      else if (step.status === "running") total += weight * (step.progress == null ? 0.3 : step.progress);
    }
    return Math.round(Math.min(1, total) * 100);
  }

  // A live region is rewritten only when its words change (screen readers announce every write).
  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  function heading(status, failedSteps) {
    if (status.phase === "failed") return "marimo could not be started";
    if (failedSteps.length && status.ready) return "marimo is running, with a problem";
    if (failedSteps.length) return "Starting your marimo environment: a step failed";
    if (STANDALONE) return "Your marimo environment";
    return "Starting your marimo environment";
  }

  function describe(status) {
    if (status.phase === "ready") return STANDALONE ? "marimo is running." : "Ready: opening marimo…";
    if (status.phase === "degraded") return "marimo is running, but something needs your attention.";
    if (status.phase === "failed") return "marimo could not be started.";
    if (status.phase === "stopping") return "The server is stopping; this page reconnects when it is back.";
    const running = status.steps.find((s) => s.status === "running");
    return running ? running.message : "Starting…";
  }

  function stepText(step) {
    let text = step.message || step.status;
    if (step.status !== "running") return text;
    if (step.next_attempt_at) {
      const wait = Math.max(0, Math.round(step.next_attempt_at - Date.now() / 1000));
      text += " · attempt " + step.attempt + (step.max_attempts ? " of " + step.max_attempts : "") + ", next in " + wait + " s";
    }
    return text;
  }

  function render(status) {
    latest = status;
    const list = $("steps");
    list.replaceChildren();
    for (const step of status.steps) {
      const li = document.createElement("li");
      li.className = step.status;
      li.dataset.step = step.name;
      li.dataset.status = step.status;
      const icon = document.createElement("span");
      icon.className = "icon";
      icon.textContent = ICONS[step.status] || "?";
      icon.setAttribute("aria-hidden", "true");
      const state = document.createElement("span");
      state.className = "state";
      state.textContent = STATES[step.status] || step.status;
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = LABELS[step.name] || step.name;
      const msg = document.createElement("span");
      msg.className = "msg";
      msg.textContent = stepText(step);
      li.append(icon, name, state, msg);
      list.append(li);
    }
    const percent = status.phase === "ready" ? 100 : overall(status);
    const running = status.steps.find((s) => s.status === "running");
    const eta = running ? remaining(running) : null;
    const bar = $("bar");
    bar.setAttribute("aria-valuenow", String(percent));
    bar.setAttribute("aria-valuetext", percent + "%" + (eta != null ? ", about " + eta + " seconds left" : ""));
    const failedSteps = status.steps.filter((s) => s.status === "failed");
    bar.classList.toggle("failed", status.phase === "failed" || failedSteps.length > 0);
    bar.classList.toggle("active", !!running && status.phase === "starting");
    setText($("title"), heading(status, failedSteps));
    $("auto").hidden = STANDALONE || status.phase !== "starting";
    $("bar-fill").style.width = percent + "%";
    setText($("percent"), percent + "%" + (eta != null ? " · about " + eta + " s left" : ""));
    setText($("phase"), describe(status));
    const warning = status.state && status.state.warning;
    $("state-warning").hidden = !warning;
    $("state-warning").textContent = warning || "";
    const notice = status.notice && Date.now() / 1000 - status.notice.at < 600 ? status.notice.message : "";
    $("notice").hidden = !notice;
    setText($("notice"), notice);

    const failed = status.steps.filter((s) => s.status === "failed");
    $("problem").hidden = failed.length === 0;
    $("problem-text").replaceChildren(...failed.map((s) => {
      const part = document.createElement("span");
      part.className = "problem-step";
      const cause = s.name === "marimo" && status.marimo && status.marimo.last_output && status.marimo.last_output.length
        ? status.marimo.last_output.slice(-3).join(" ") : s.message;
      part.append(EXPLAIN[s.name] + " ");
      if (cause) {
        const strong = document.createElement("strong");
        strong.textContent = cause;
        part.append(strong);
      }
      return part;
    }));
    const requirementsFailed = failed.some((s) => s.name === "requirements");
    $("open-anyway").hidden = !(status.ready && (failed.length > 0 || STANDALONE));
    $("retry").hidden = !requirementsFailed;
    $("restart-marimo").hidden = !(status.marimo && status.marimo.pid) && status.phase !== "failed";
    $("restart-deployment").hidden = !(status.capabilities && status.capabilities.restart_deployment);
    if (failed.length) $("log-box").open = true;
    document.body.dataset.phase = status.phase;
  }

  // marimo's own chatter (its banner, GPU probes, warnings meant for its developers) and the
  // installer's "Activate with" hint are kept out of the page's log; /-/status keeps everything.
  const NOISE = /Activate with:|nvidia-smi|rocm-smi|skew protection|Create or edit notebooks|^\s*(➜\s*)?URL:|^\s*$/i;

  function wanted(record) {
    if (NOISE.test(record.line || "")) return false;
    if (record.source !== "marimo") return true;
    const step = latest && latest.steps.find((s) => s.name === "marimo");
    return !!step && step.status === "failed"; // then its last words are the cause
  }

  function appendLog(record) {
    if (!wanted(record)) return;
    const prefix = record.source ? "[" + record.source + "] " : "";
    logEl.append(prefix + record.line + "\n");
    while (logEl.childNodes.length > 400) logEl.removeChild(logEl.firstChild);
    logEl.scrollTop = logEl.scrollHeight;
  }

  function leave() {
    if (leaving) return;
    leaving = true;
    // The page was served in place of the URL the user asked for: load it again.
    window.location.reload();
  }

  function openMarimo() {
    if (STANDALONE) window.location.assign("/");
    else leave();
  }

  function onStatus(status) {
    if (status.boot_id !== bootId) {
      // The orchestrator restarted (a deployment restart, a crash): start watching afresh.
      bootId = status.boot_id;
      watchedStart = true;
      pending = null;
      logEl.replaceChildren();
    }
    if (status.phase === "starting") watchedStart = true;
    render(status);
    settle(status);
    if (!status.ready || pending || STANDALONE) return;
    // A start this page watched that ended degraded stays here so the user reads what failed.
    if (status.phase === "degraded" && watchedStart && status.steps.some((s) => s.status === "failed")) return;
    leave();
  }

  // Until what the user asked for here is over, the page stays (it would otherwise leave for
  // marimo mid-install, as the phase reads "ready" while the step runs again); then it says so.
  function settle(status) {
    if (!pending) return;
    if (pending.scope === "marimo") {
      const pid = status.marimo && status.marimo.pid;
      if (status.ready && pid && pid !== pending.pid) {
        $("action-result").textContent = "marimo restarted.";
        pending = null;
      }
    } else if (pending.scope === "install") {
      const step = status.steps.find((s) => s.name === "requirements");
      if (step && step.status !== "running" && step.finished_at && step.finished_at !== pending.finished) {
        $("action-result").textContent = step.status === "failed" ? "The install failed again." : "The requirements are installed.";
        pending = null;
      }
    } else {
      pending = null; // a deployment restart: the new boot_id tells
    }
  }

  async function act(button, body, waiting) {
    button.disabled = true;
    $("action-result").textContent = waiting;
    // Before the request: its first effects can arrive on the event stream before its answer.
    const requirements = latest ? latest.steps.find((s) => s.name === "requirements") : null;
    pending = {
      scope: body.scope,
      pid: latest && latest.marimo ? latest.marimo.pid : null,
      finished: requirements ? requirements.finished_at : null,
    };
    try {
      const response = await fetch("/-/restart", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      const answer = await response.json().catch(() => ({}));
      if (response.status === 202) {
        watchedStart = true;
        if (latest) settle(latest);
      } else {
        pending = null;
        $("action-result").textContent = answer.error || "The request was refused.";
      }
    } catch (e) {
      pending = null;
      $("action-result").textContent = "The server could not be reached; try again in a moment.";
    } finally {
      button.disabled = false;
    }
  }

  $("open-anyway").addEventListener("click", openMarimo);
  if (STANDALONE) {
    $("open-anyway").textContent = "Open marimo";
    document.title = "marimo environment";
  }
  $("retry").addEventListener("click", (e) => act(e.target, { scope: "install" }, "Installing the requirements again…"));
  $("restart-marimo").addEventListener("click", (e) => act(e.target, { scope: "marimo" }, "Restarting marimo…"));
  $("restart-deployment").addEventListener("click", (e) => act(e.target, { scope: "deployment" }, "Asking Quix to restart the deployment…"));

  try {
    const initial = JSON.parse($("initial-status").textContent);
    watchedStart = initial.phase === "starting";
    render(initial);
  } catch (e) { /* the event stream brings the status */ }

  // Refresh relative times (ETA, retry countdown) between events.
  setInterval(() => { if (latest) render(latest); }, 1000);

  let source = null;
  function connect() {
    source = new EventSource("/-/events");
    source.addEventListener("status", (event) => onStatus(JSON.parse(event.data)));
    source.addEventListener("log", (event) => appendLog(JSON.parse(event.data)));
    source.onerror = async () => {
      $("phase").textContent = "Reconnecting to the server…";
      if (source.readyState !== EventSource.CLOSED) return; // the browser retries by itself
      try {
        const probe = await fetch("/-/status", { credentials: "same-origin" });
        if (probe.status === 401) {
          window.location.href = "/-/login?next=" + encodeURIComponent(location.pathname + location.search);
          return;
        }
      } catch (e) { /* the server is down: keep trying */ }
      setTimeout(connect, 2000);
    };
  }
  connect();
})();
