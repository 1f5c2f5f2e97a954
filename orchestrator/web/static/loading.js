// The loading page: renders the status board and returns to the requested URL once ready.
// Invariants: only the server declares readiness (the page reloads the URL it was served at);
// the page keeps working while the orchestrator restarts under it (new boot_id) and signs the
// user in again if their session ends.
// Progress never lies: the bar and the percentage beside it are drawn from one number, with no
// animation between them; a time left is said only from how long the step took last time
// (``expected_seconds``), never extrapolated from the bar; a running step shows how long it has
// been running, so a silent phase still visibly moves. Words are for users: internals (paths,
// pids, the server's own messages) and an installer's output are folded under "Details", the
// installer's output once.
// The hand-over: once marimo is ready the page says "Opening your notebook…", fetches marimo's
// page and the files it loads first (so they come from the browser's cache), then loads it;
// marimo's page itself shows the same words until its editor has rendered (opening.js).
"use strict";
(function () {
  const WEIGHTS = { state: 0.05, venv: 0.15, requirements: 0.6, marimo: 0.2 };
  const ICONS = { pending: "○", running: "◐", done: "✓", skipped: "✓", failed: "✗" };
  const STATES = { pending: "Waiting", running: "In progress", done: "Done", skipped: "Skipped", failed: "Failed" };
  const { LABELS, plainMessage } = window.__marimoOrchestratorWords; // words.js
  const EXPLAIN = {
    state: "The persistent state volume could not be used, so a temporary folder is used: packages installed now will not persist across restarts.",
    venv: "Python could not be prepared, so marimo runs without its Install button.",
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
  let shownProblem = "[]"; // problemKey of the failure drawn (drawProblem)
  let pending = null; // a restart the user asked for here, until the status shows it done

  // Per running step (name and start), the earliest moment it was estimated to end: a new
  // estimate can bring it closer, never push it back, so the ETA shown never rises.
  const deadlines = new Map();

  function remaining(step) {
    if (!step.started_at) return null;
    const now = Date.now() / 1000;
    const elapsed = now - step.started_at;
    // Only from a past run of the step: the bar's fraction is the installer's phases, not time.
    const estimate = step.expected_seconds ? step.expected_seconds - elapsed : null;
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
    return running ? plainMessage(running) || "Starting…" : "Starting…";
  }

  function elapsed(step) {
    if (step.status !== "running" || !step.started_at) return null;
    return Math.max(0, Math.floor(Date.now() / 1000 - step.started_at));
  }

  function stepText(step) {
    if (step.status === "failed") return "See below.";
    let text = plainMessage(step) || STATES[step.status] || step.status;
    if (step.status !== "running") return text;
    const running = elapsed(step);
    if (running != null && running >= 1) text += " · " + running + " s";
    if (step.next_attempt_at) {
      const wait = Math.max(0, Math.round(step.next_attempt_at - Date.now() / 1000));
      text += " · attempt " + step.attempt + (step.max_attempts ? " of " + step.max_attempts : "") + ", next in " + wait + " s";
    }
    return text;
  }

  function render(status) {
    latest = status;
    if (leaving) return; // the hand-over's words stay
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
    drawProgress(percent, eta != null ? " · about " + eta + " s left" : "");
    setText($("activity"), running && status.phase === "starting" ? quiet(running) : "");
    setText($("phase"), describe(status));
    const warning = status.state && status.state.warning;
    $("state-warning").hidden = !warning;
    $("state-warning").textContent = warning || "";
    const notice = status.notice && Date.now() / 1000 - status.notice.at < 600 ? status.notice.message : "";
    $("notice").hidden = !notice;
    setText($("notice"), notice);

    const failed = status.steps.filter((s) => s.status === "failed");
    $("problem").hidden = failed.length === 0;
    // Redrawn only when what it says changes: an unfolded "Details" (and focus on it) stays.
    if (problemKey(failed, status) !== shownProblem) drawProblem(failed, status);
    renderInternals(status);
    const requirementsFailed = failed.some((s) => s.name === "requirements");
    $("open-anyway").hidden = !(status.ready && (failed.length > 0 || STANDALONE));
    $("retry").hidden = !requirementsFailed;
    $("restart-marimo").hidden = !(status.marimo && status.marimo.pid) && status.phase !== "failed";
    $("restart-deployment").hidden = !(status.capabilities && status.capabilities.restart_deployment);
    document.body.dataset.phase = status.phase;
  }

  function problemKey(failed, status) {
    return JSON.stringify(failed.map((s) => [s.name, s.message, s.detail,
      s.name === "marimo" && status.marimo ? status.marimo.last_output : null]));
  }
  function drawProblem(failed, status) {
    shownProblem = problemKey(failed, status);
    if (failed.length) $("log-box").open = true; // once, when a failure comes: the user may fold it
    $("problem-text").replaceChildren(...failed.map((s) => {
      const part = document.createElement("span");
      part.className = "problem-step";
      part.dataset.step = s.name;
      part.append(EXPLAIN[s.name] + " ");
      const said = s.name === "marimo" ? "" : plainMessage(s);
      if (said) {
        const strong = document.createElement("strong");
        strong.textContent = said;
        part.append(strong);
      }
      // The tool's own words, once, folded: an installer's error lines, marimo's last output.
      const words = s.name === "marimo" && status.marimo && status.marimo.last_output && status.marimo.last_output.length
        ? status.marimo.last_output.slice(-3).join("\n") : s.detail || "";
      if (words) part.append(folded("Details", words, "detail"));
      return part;
    }));
  }

  // The bar and its label from one number: the bar's width is set without a transition
  // (loading.css), so what is drawn is what is written.
  function drawProgress(percent, suffix) {
    const fill = $("bar-fill");
    fill.style.width = percent + "%";
    fill.dataset.percent = String(percent);
    setText($("percent"), percent + "%" + suffix);
  }

  // A running step that has said nothing for a while (pip unpacking, marimo importing) still
  // shows that it works, and for how long.
  let lastNews = Date.now();
  function quiet(step) {
    const silent = Math.floor((Date.now() - lastNews) / 1000);
    if (silent < 4) return "";
    const running = elapsed(step);
    return "Still working" + (running != null ? ": " + running + " s so far" : "") + ". Some steps say nothing for a while (packages are being unpacked, marimo is loading).";
  }

  function folded(title, text, kind) {
    const box = document.createElement("details");
    box.className = kind;
    const summary = document.createElement("summary");
    summary.textContent = title;
    const pre = document.createElement("pre");
    pre.textContent = text;
    box.append(summary, pre);
    return box;
  }

  // Each step's own message, as the server says it (paths, pids): for whoever needs them.
  function renderInternals(status) {
    const list = $("internals-list");
    const rows = [];
    for (const step of status.steps) {
      if (!step.message) continue;
      const term = document.createElement("dt");
      term.textContent = LABELS[step.name] || step.name;
      const value = document.createElement("dd");
      value.textContent = step.message;
      rows.push(term, value);
    }
    if (status.state && status.state.path) {
      const term = document.createElement("dt");
      term.textContent = "State folder";
      const value = document.createElement("dd");
      value.textContent = status.state.path;
      rows.push(term, value);
    }
    const open = $("internals").open;
    list.replaceChildren(...rows);
    $("internals").open = open;
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
    lastNews = Date.now();
    if (!wanted(record)) return;
    const prefix = record.source ? "[" + record.source + "] " : "";
    logEl.append(prefix + record.line + "\n");
    while (logEl.childNodes.length > 400) logEl.removeChild(logEl.firstChild);
    logEl.scrollTop = logEl.scrollHeight;
  }

  function leave() {
    if (leaving) return;
    handOver(window.location.href, () => window.location.reload());
  }

  function openMarimo() {
    if (STANDALONE) handOver(new URL("/", window.location.href).href, () => window.location.assign("/"));
    else leave();
  }

  // "Opening your notebook…" stays on screen while marimo's page and the files it loads first
  // are fetched into the browser's cache, then the page is loaded (from that cache: no blank
  // page while they download). Bounded: same-origin files only, at most WARM_LIMIT of them,
  // WARM_PARALLEL at a time, and the page goes on after WARM_SECONDS whatever is left.
  const WARM_LIMIT = 400;
  const WARM_PARALLEL = 6;
  const WARM_SECONDS = 20;
  function handOver(url, go) {
    leaving = true;
    document.body.dataset.handover = "opening";
    setText($("title"), "Opening your notebook…");
    setText($("phase"), "marimo is ready: loading its editor…");
    $("auto").hidden = true;
    drawProgress(100, "");
    $("bar").classList.add("active");
    let gone = false;
    const goOnce = () => { if (!gone) { gone = true; go(); } };
    setTimeout(goOnce, WARM_SECONDS * 1000);
    warm(url).then(goOnce, goOnce);
  }

  async function warm(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } });
    if (!response.ok || !(response.headers.get("Content-Type") || "").includes("text/html")) return;
    const doc = new DOMParser().parseFromString(await response.text(), "text/html");
    if (doc.getElementById("steps")) return; // the loading page again: nothing of marimo's to fetch
    const base = response.url || url;
    const found = [];
    for (const node of doc.querySelectorAll("script[src], link[href]")) {
      const rel = (node.getAttribute("rel") || "").toLowerCase();
      if (node.tagName === "LINK" && !/(^|\s)(stylesheet|modulepreload|preload)(\s|$)/.test(rel)) continue;
      let target;
      try { target = new URL(node.getAttribute("src") || node.getAttribute("href"), base); } catch (e) { continue; }
      if (target.origin !== window.location.origin || found.includes(target.href)) continue;
      found.push(target.href);
      if (found.length >= WARM_LIMIT) break;
    }
    let next = 0;
    async function worker() {
      while (next < found.length) {
        const target = found[next++];
        try { await (await fetch(target, { credentials: "same-origin" })).arrayBuffer(); } catch (e) { /* loaded again by the page */ }
      }
    }
    await Promise.all(Array.from({ length: WARM_PARALLEL }, worker));
  }

  function onStatus(status) {
    lastNews = Date.now();
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
