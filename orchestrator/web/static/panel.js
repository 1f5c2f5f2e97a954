// The Environment panel and notices inside marimo's pages (added by the proxy's HTML transform).
// Invariants: it only reads /-/status and /-/events and posts to /-/restart, like the loading
// page (and /-/requirements: the packages a user installed, offered for requirements.txt);
// it never reloads the page (an open tab survives restarts by itself, see README); one
// events stream per browser: one tab leads (a Web Lock, else a heartbeat in localStorage) and
// shares every status over a BroadcastChannel; in run mode it shows status only, no actions.
// What an install changed and the packages a user added are the server's word (/-/status: the
// requirements step's ``changes``, ``user_packages``): installer output is never read here.
// Words are for users: steps are named for what they do ("Python packages"), a server message
// holding internals (a path, a pid, the venv) is replaced by plain words and kept under
// "Details", with a failed install's installer output, which is shown there once. The
// "Packages" section lists what is installed (GET /-/packages), split into what a file declares
// and what the user added, with the offer to add the latter to requirements.txt.
// Focus follows the dialog pattern: Alt+Shift+E (free in marimo's keymap) opens and closes the
// panel from anywhere, focus stays inside it after a confirmation or Cancel, Escape closes it
// and focus returns to where it was before.
"use strict";
(function () {
  if (window.__marimoOrchestratorPanel) return;
  window.__marimoOrchestratorPanel = true;
  const script = document.currentScript;
  const EDIT = !script || script.dataset.mode !== "run";
  const LABELS = { state: "Storage", venv: "Python", requirements: "Python packages", marimo: "marimo" };
  const PLAIN = {
    state: { running: "Waiting for the deployment's storage", done: "Packages are saved on the deployment's storage",
      failed: "The deployment's storage could not be used" },
    venv: { running: "Preparing Python", done: "Python is ready", skipped: "Python is ready", failed: "Python could not be prepared" },
    requirements: { running: "Installing Python packages", done: "Python packages installed", skipped: "Nothing to install",
      failed: "The Python packages could not be installed" },
    marimo: { running: "Starting marimo", done: "marimo is running", failed: "marimo could not be started" },
  };
  // The loading page's rule (loading.js): such a message stays under "Details".
  const INTERNAL = /(^|[\s(:'"])\/[^\s]|\bpid\b|\bvenvs?\b|\bmanifest\b|\bsite-packages\b|\.pth\b/i;
  function plainMessage(step) {
    const message = step.message || "";
    const fallback = (PLAIN[step.name] || {})[step.status] || "";
    return !message || INTERNAL.test(message) ? fallback : message;
  }
  const STATES = { pending: "waiting", running: "in progress", done: "done", skipped: "done, nothing to do", failed: "failed" };
  const ACTIONS = [
    { id: "marimo", label: "Restart marimo", body: { scope: "marimo" },
      confirm: "Restart marimo? The kernel starts afresh: its variables are lost. Your notebook's code is kept.",
      doing: "Restarting marimo…" },
    { id: "install", label: "Reinstall requirements", body: { scope: "install" },
      confirm: "Install requirements.txt again? marimo restarts afterwards if needed.",
      doing: "Installing the requirements…" },
    { id: "rebuild", label: "Rebuild environment", body: { scope: "install", rebuild: true },
      confirm: "Rebuild the environment from scratch? This takes a while; packages you installed are reinstalled.",
      doing: "Rebuilding the environment…" },
    { id: "deployment", label: "Restart deployment", body: { scope: "deployment" },
      confirm: "Ask Quix to restart this deployment? The page reconnects when it is back.",
      doing: "Asking Quix to restart the deployment…", needs: "restart_deployment" },
  ];

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === false || value == null) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    node.append(...children.filter((c) => c != null));
    return node;
  }

  // -- the elements -----------------------------------------------------------------------
  const label = el("span", { text: "Environment" });
  const SHORTCUT = "Alt+Shift+E";
  const toggle = el("button", { type: "button", class: "mo-orch-toggle", "aria-expanded": "false", "aria-controls": "mo-orch-panel",
    title: "Environment: Python packages and restarts (" + SHORTCUT + ")", "aria-keyshortcuts": SHORTCUT },
    el("span", { class: "mo-orch-dot", "aria-hidden": "true" }), label);
  const stepsList = el("ul", { class: "mo-orch-steps", "aria-label": "Startup steps" });
  const details = el("div", { class: "mo-orch-details" });
  const packagesBox = el("section", { class: "mo-orch-packages-box", "data-section": "packages", "aria-labelledby": "mo-orch-packages-title" },
    el("h3", { id: "mo-orch-packages-title", text: "Packages" }), el("p", { class: "mo-orch-muted", text: "Reading…" }));
  const internals = el("details", { class: "mo-orch-internals" }, el("summary", { text: "Technical details" }), el("dl"));
  const actionsBox = el("div", { class: "mo-orch-actions" });
  const confirmBox = el("div", { class: "mo-orch-confirm", hidden: true });
  const result = el("p", { class: "mo-orch-result", role: "status", "aria-live": "polite" });
  const close = el("button", { type: "button", class: "mo-orch-close", "aria-label": "Close the Environment panel" }, "×");
  const panel = el("section", { id: "mo-orch-panel", class: "mo-orch-panel", role: "region", "aria-labelledby": "mo-orch-title", hidden: true },
    el("div", { class: "mo-orch-head" }, el("h2", { id: "mo-orch-title", text: "Environment" }), close),
    stepsList, details, packagesBox, EDIT ? actionsBox : null, EDIT ? confirmBox : null, result, internals,
    el("p", { class: "mo-orch-more" }, el("a", { href: "/-/loading", target: "_blank", rel: "noopener" }, "Status page and full log")));
  const banners = el("div", { class: "mo-orch-banners", role: "region", "aria-label": "Environment notices" });
  const root = el("div", { class: "mo-orch", "data-orchestrator": "panel" }, toggle, panel, banners);

  function mount() {
    if (!document.body) return setTimeout(mount, 50);
    document.body.append(root);
  }
  mount();

  let returnTo = null; // where focus was when the panel opened: it goes back there on close
  function setOpen(open) {
    panel.hidden = !open;
    toggle.setAttribute("aria-expanded", String(open));
    if (open) close.focus();
    else {
      confirmBox.hidden = true;
      if (!pending) result.textContent = ""; // a finished action's word is not kept for later
    }
  }
  function openPanel() {
    const active = document.activeElement;
    returnTo = active && active !== document.body && !panel.contains(active) ? active : toggle;
    setOpen(true);
  }
  function closePanel() {
    const back = returnTo && returnTo.isConnected ? returnTo : toggle;
    setOpen(false);
    returnTo = null;
    back.focus();
  }
  toggle.addEventListener("click", () => (panel.hidden ? openPanel() : closePanel()));
  close.addEventListener("click", closePanel);
  root.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !panel.hidden) { event.stopPropagation(); closePanel(); }
  });
  // Capturing on the window: before marimo's code editors, which keep most keys for themselves.
  window.addEventListener("keydown", (event) => {
    if (!event.altKey || !event.shiftKey || event.ctrlKey || event.metaKey) return;
    if (event.code !== "KeyE" && (event.key || "").toLowerCase() !== "e") return;
    event.preventDefault();
    event.stopPropagation();
    if (panel.hidden) openPanel();
    else closePanel();
  }, true);

  // -- actions, confirmed inside the page -------------------------------------------------
  let latest = null;
  let pending = null; // the action asked for here, until the status shows it over
  for (const action of ACTIONS) {
    const button = el("button", { type: "button", "data-action": action.id }, action.label);
    button.addEventListener("click", () => askConfirm(action));
    actionsBox.append(button);
  }

  // After Yes or Cancel focus goes back to the action's own button, inside the panel (never to
  // the page's body, where Escape would no longer reach the panel).
  function askConfirm(action) {
    const yes = el("button", { type: "button", class: "mo-orch-yes" }, "Yes, " + action.label.charAt(0).toLowerCase() + action.label.slice(1));
    const no = el("button", { type: "button" }, "Cancel");
    const back = () => actionsBox.querySelector('[data-action="' + action.id + '"]') || close;
    if (!pending) result.textContent = ""; // what an earlier action ended with is over
    confirmBox.replaceChildren(el("p", { text: action.confirm }), yes, no);
    confirmBox.hidden = false;
    yes.addEventListener("click", () => { confirmBox.hidden = true; back().focus(); run(action); });
    no.addEventListener("click", () => {
      confirmBox.hidden = true;
      if (!pending) result.textContent = "";
      back().focus();
    });
    yes.focus();
  }

  async function run(action) {
    result.textContent = action.doing;
    const requirements = latest && latest.steps.find((s) => s.name === "requirements");
    pending = {
      action, since: Date.now(),
      pid: latest && latest.marimo ? latest.marimo.pid : null,
      finished: requirements ? requirements.finished_at : null,
    };
    notice("work", action.doing, false);
    try {
      const response = await fetch("/-/restart", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json" }, body: JSON.stringify(action.body),
      });
      if (response.status !== 202) {
        const answer = await response.json().catch(() => ({}));
        pending = null;
        clearNotice("work");
        result.textContent = answer.error || "The request was refused (" + response.status + ").";
      }
    } catch (e) {
      pending = null;
      clearNotice("work");
      result.textContent = "The server could not be reached; try again in a moment.";
    }
  }

  // -- banners and notices ----------------------------------------------------------------
  const shown = new Map(); // kind -> element
  function dismissedKey(kind, version) { return "marimo-orchestrator:dismissed:" + (latest ? latest.boot_id : "") + ":" + kind + ":" + version; }
  function isDismissed(kind, version) { try { return localStorage.getItem(dismissedKey(kind, version)) === "1"; } catch (e) { return false; } }

  function banner(kind, text, version, tone) {
    if (isDismissed(kind, version)) return clearNotice(kind);
    let node = shown.get(kind);
    if (node && node.dataset.text === text) return;
    if (node) node.remove();
    const dismiss = el("button", { type: "button", class: "mo-orch-dismiss", "aria-label": "Dismiss: " + text }, "Dismiss");
    node = el("div", { class: "mo-orch-banner " + tone, "data-kind": kind, role: tone === "problem" ? "alert" : "status" },
      el("span", { text }), dismiss);
    node.dataset.text = text;
    dismiss.addEventListener("click", () => {
      try { localStorage.setItem(dismissedKey(kind, version), "1"); } catch (e) { /* this page only */ }
      clearNotice(kind);
    });
    shown.set(kind, node);
    banners.append(node);
  }

  function notice(kind, text, dismissable) {
    let node = shown.get(kind);
    if (node && node.dataset.text === text) return;
    if (node) node.remove();
    node = el("div", { class: "mo-orch-banner info", "data-kind": kind, role: "status" }, el("span", { text }));
    node.dataset.text = text;
    if (dismissable) {
      const dismiss = el("button", { type: "button", class: "mo-orch-dismiss", "aria-label": "Dismiss: " + text }, "Dismiss");
      dismiss.addEventListener("click", () => clearNotice(kind));
      node.append(dismiss);
    }
    shown.set(kind, node);
    banners.append(node);
  }

  function clearNotice(kind) {
    const node = shown.get(kind);
    if (node) node.remove();
    shown.delete(kind);
  }

  // -- what an install changed, as the server says it ----------------------------------------
  // The requirements step's ``changes`` (/-/status): added, changed (from → to), removed, and
  // recorded (a notebook's header newly declares a package the venv had), each entry with the
  // files that ask for it (none: a dependency), and ``more`` left uncounted in the lists.
  function listed(entries, say, more) {
    const named = entries.slice(0, 3).map(say);
    const rest = entries.length - named.length + (more || 0);
    return named.join(", ") + (rest > 0 ? " (and " + rest + " more package" + (rest > 1 ? "s" : "") + ")" : "");
  }
  const forFiles = (entry) => (entry.for && entry.for.length ? " for " + entry.for.join(" and ") : "");
  const sayAdded = (entry) => entry.name + " " + entry.version + " installed" + forFiles(entry);
  const sayChanged = (entry) => entry.name + " " + entry.from + " → " + entry.to;
  const sayRemoved = (entry) => entry.name + " " + entry.version + " removed";
  const sayRecorded = (entry) => entry.name + " " + entry.version + " added to " + (entry.for || []).join(" and ") + "'s dependencies";

  function changesOf(step) {
    const c = step && step.changes;
    if (!c || typeof c !== "object") return null;
    const list = (key) => (Array.isArray(c[key]) ? c[key] : []);
    return { added: list("added"), changed: list("changed"), removed: list("removed"), recorded: list("recorded"),
      more: typeof c.more === "number" ? c.more : 0 };
  }

  // One sentence for what an install changed ("" when nothing did): what a source asked for is
  // named, dependencies are counted.
  function describeChanges(c) {
    const asked = c.added.filter((e) => e.for && e.for.length);
    const parts = [];
    if (c.changed.length) parts.push("Changed " + listed(c.changed, sayChanged, 0));
    if (asked.length || c.recorded.length) {
      parts.push(listed([...c.recorded, ...asked], (e) => (c.recorded.includes(e) ? sayRecorded(e) : sayAdded(e)), 0));
    }
    const others = c.added.length - asked.length + c.removed.length + c.more;
    if (!parts.length) {
      return others ? listed([...c.added, ...c.removed], (e) => (c.removed.includes(e) ? sayRemoved(e) : sayAdded(e)), c.more) : "";
    }
    return parts.join("; ") + (others > 0 ? " (and " + others + " other package" + (others > 1 ? "s" : "") + ")" : "");
  }

  function announceInstall(requirements) {
    if (requirements.status !== "done") return;
    const c = changesOf(requirements);
    if (!c) return;
    const said = describeChanges(c);
    if (c.changed.length) {
      changeNotice(said + ". The kernel keeps the versions it already imported until marimo restarts.");
    } else if (c.added.length || c.removed.length) {
      notice("installed", said + ": run the cells that import them again.", true);
    } else if (c.recorded.length) {
      notice("installed", said + ".", true);
    } else if (!shown.has("installed")) { // what an earlier run changed stays in view
      notice("installed", "Requirements installed: nothing changed.", true);
    }
  }

  // Packages a user added (marimo's Install button, a terminal), as the ledger has them: new
  // ones are announced; what was there when this page first heard is not news.
  let userPackages = null; // name -> version, as last heard
  function announceUserPackages(list) {
    if (!Array.isArray(list)) return;
    const now = new Map(list.map((p) => [p.name, p.version]));
    if (userPackages) {
      const fresh = list.filter((p) => userPackages.get(p.name) !== p.version);
      if (fresh.length || list.length !== userPackages.size) refreshPackages();
      if (fresh.length) {
        notice("user-installed", listed(fresh, (p) => p.name + " " + p.version, 0)
          + " installed from the editor; kept across restarts.", true);
      }
    }
    userPackages = now;
  }

  function changeNotice(text) {
    notice("installed", text, true);
    const node = shown.get("installed");
    if (!node || !EDIT) return;
    const restart = el("button", { type: "button", class: "mo-orch-yes" }, "Restart marimo");
    restart.addEventListener("click", () => {
      if (panel.hidden) openPanel();
      askConfirm(ACTIONS[0]);
    });
    node.insertBefore(restart, node.lastChild);
  }

  // -- following the status ---------------------------------------------------------------
  let known = null; // the marimo this page talks to: {boot, pid}
  let outageSince = null;
  let requirementsFinished;

  function handle(status) {
    if (!status || !Array.isArray(status.steps)) return;
    latest = status;
    const pid = status.marimo ? status.marimo.pid : null;
    const running = status.steps.find((s) => s.status === "running");
    const requirements = status.steps.find((s) => s.name === "requirements");
    if (requirementsFinished === undefined) requirementsFinished = requirements ? requirements.finished_at : null;

    if (!status.ready || running) {
      if (outageSince === null && (known || pending)) outageSince = Date.now();
      if (known || pending) {
        const what = running ? (LABELS[running.name] || running.name) + ": " + (plainMessage(running) || "working…")
          : status.phase === "stopping" ? "The server is restarting…" : "Restarting marimo…";
        notice("work", what, false);
      }
    }
    if (status.ready && pid) {
      if (known && (pid !== known.pid || status.boot_id !== known.boot)) {
        const since = outageSince !== null ? outageSince : (pending ? pending.since : null);
        const took = since !== null ? " in " + ((Date.now() - since) / 1000).toFixed(1) + " s" : "";
        notice("kernel", "marimo restarted" + took + ": this notebook runs on a new kernel, so its variables are gone. Run your cells again.", true);
      }
      known = { boot: status.boot_id, pid };
      if (!running) {
        outageSince = null;
        clearNotice("work");
      }
    }
    if (requirements && requirements.finished_at && requirements.finished_at !== requirementsFinished) {
      requirementsFinished = requirements.finished_at;
      announceInstall(requirements);
      refreshPackages();
    }
    announceUserPackages(status.user_packages);
    if (pending && status.ready && !running) {
      const p = pending;
      const over = p.action.body.scope === "marimo" ? pid && pid !== p.pid
        : p.action.body.scope === "install" ? requirements && requirements.finished_at && requirements.finished_at !== p.finished
        : true;
      if (over) {
        pending = null;
        result.textContent = p.action.body.scope === "install" && requirements && requirements.status === "failed"
          ? "The install failed: see Python packages above."
          : p.action.body.scope === "deployment" ? "Quix was asked to restart the deployment; this page reconnects when it is back."
          : p.action.label + ": done.";
      }
    }
    // What the orchestrator itself announces ("Restarting marimo (requested)", Quix's answer to
    // a deployment restart): shown while it stands, in place of this page's own words.
    const announced = status.notice;
    if (announced && typeof announced.message === "string" && typeof announced.at === "number"
        && Date.now() / 1000 - announced.at < 600) {
      clearNotice("work");
      notice("orchestrator", announced.message, false);
    } else clearNotice("orchestrator");
    renderBanners(status, requirements);
    renderPanel(status);
  }

  function renderBanners(status, requirements) {
    if (requirements && requirements.status === "failed") {
      banner("requirements", "The Python packages could not be installed. " + plainMessage(requirements), String(requirements.finished_at), "problem");
    } else clearNotice("requirements");
    const state = status.state || {};
    if (state.persistent === false) {
      banner("state", state.warning || "The state is not persistent: packages installed now are lost at the next restart.", "1", "warning");
    } else clearNotice("state");
    const problem = syncProblem(status.sync);
    if (problem) banner("sync", "Saving notebooks to Quix: " + problem, problem, "warning");
    else clearNotice("sync");
    const troubled = (requirements && requirements.status === "failed") || state.persistent === false || !!problem || status.phase === "failed";
    label.textContent = "Environment" + (troubled ? ": needs attention" : status.ready ? "" : ": working");
    toggle.classList.toggle("mo-orch-troubled", !!troubled);
  }

  function syncProblem(sync) {
    if (!sync || typeof sync !== "object") return "";
    const text = sync.error || sync.last_error || sync.problem || "";
    return typeof text === "string" ? text : "";
  }

  function syncSummary(sync) {
    if (!sync || typeof sync !== "object") return "not in use";
    const problem = syncProblem(sync);
    if (problem) return "problem: " + problem;
    const waiting = Array.isArray(sync.pending) ? sync.pending.length : typeof sync.pending === "number" ? sync.pending : 0;
    if (waiting) return waiting + " file(s) waiting to be saved";
    return sync.last_sync_at || sync.last_synced_at ? "up to date" : "on";
  }

  function ago(seconds) {
    if (seconds < 90) return Math.max(0, Math.round(seconds)) + " s ago";
    if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
    if (seconds < 129600) return Math.round(seconds / 3600) + " h ago";
    return Math.round(seconds / 86400) + " days ago";
  }

  // Where the Python packages run from, and their copy on the deployment's storage.
  function environmentSummary(environment, now) {
    if (!environment || typeof environment !== "object") return "not known yet";
    const where = environment.location === "local"
      ? "on this container's disk (fast)"
      : "on the deployment's storage";
    const parts = [where];
    const snapshot = environment.snapshot;
    if (environment.location === "local") {
      if (environment.snapshotting) parts.push("saving a copy to the deployment's storage…");
      else if (snapshot && typeof snapshot.made_at === "number") {
        parts.push("copy saved on the deployment's storage " + ago(now - snapshot.made_at) +
          " (" + Math.max(1, Math.round(snapshot.size / 1e6)) + " MB)");
      } else parts.push("no copy saved yet");
    }
    if (typeof environment.warning === "string" && environment.warning) parts.push(environment.warning);
    return parts.join("; ");
  }

  function packagesLine(kind, title, text) {
    return text ? el("p", { class: "mo-orch-packages", "data-packages": kind }, el("strong", { text: title }), text) : null;
  }

  function lastInstall(requirements, now) {
    const c = requirements && requirements.status === "done" ? changesOf(requirements) : null;
    if (!c) return "";
    const when = typeof requirements.finished_at === "number" ? " (" + ago(now - requirements.finished_at) + ")" : "";
    return (describeChanges(c) || "nothing changed") + when;
  }

  function renderPanel(status) {
    const items = status.steps.map((step) =>
      el("li", { "data-step": step.name, "data-status": step.status, class: "mo-orch-" + step.status },
        el("span", { class: "mo-orch-name", text: LABELS[step.name] || step.name }),
        el("span", { class: "mo-orch-state", text: STATES[step.status] || step.status }),
        el("span", { class: "mo-orch-msg", text: step.status === "failed" && step.name === "requirements" ? "" : plainMessage(step) })));
    stepsList.replaceChildren(...items);
    const state = status.state || {};
    const requirements = status.steps.find((s) => s.name === "requirements");
    const failedInstall = requirements && requirements.status === "failed";
    const problem = failedInstall ? el("div", { class: "mo-orch-problem", "data-problem": "requirements" },
      el("p", {}, el("strong", { text: "The Python packages could not be installed: " }), plainMessage(requirements)),
      requirements.detail ? el("details", { class: "mo-orch-detail" }, el("summary", { text: "Details" }),
        el("pre", { text: requirements.detail })) : null) : null;
    // A re-render keeps the user's unfolding of "Details".
    const wasOpen = details.querySelector(".mo-orch-detail");
    if (problem && wasOpen && wasOpen.open && problem.querySelector("details")) problem.querySelector("details").open = true;
    details.replaceChildren(...[
      problem,
      el("p", {}, el("strong", { text: "Storage: " }),
        state.persistent === false ? "not saved: packages installed now are lost at the next restart. " + (state.warning || "")
          : state.persistent ? "packages are saved on the deployment's storage" : "not known yet"),
      el("p", { "data-environment": (status.environment && status.environment.location) || "" },
        el("strong", { text: "Python packages: " }), environmentSummary(status.environment, status.at || Date.now() / 1000)),
      packagesLine("last-install", "Last install: ", lastInstall(requirements, status.at || Date.now() / 1000)),
      el("p", {}, el("strong", { text: "Notebook sync: " }), syncSummary(status.sync)),
    ].filter((node) => node !== null));
    renderInternals(status);
    for (const button of actionsBox.querySelectorAll("button")) {
      const action = ACTIONS.find((a) => a.id === button.dataset.action);
      button.hidden = !!action.needs && !(status.capabilities && status.capabilities[action.needs]);
    }
  }

  // Each step's own message as the server says it (paths, pids), folded.
  function renderInternals(status) {
    const rows = [];
    for (const step of status.steps) {
      if (step.message) rows.push(el("dt", { text: LABELS[step.name] || step.name }), el("dd", { text: step.message }));
    }
    if (status.state && status.state.path) rows.push(el("dt", { text: "State folder" }), el("dd", { text: status.state.path }));
    if (status.marimo && status.marimo.pid) rows.push(el("dt", { text: "marimo's process" }), el("dd", { text: String(status.marimo.pid) }));
    internals.querySelector("dl").replaceChildren(...rows);
  }

  // -- the Packages section ---------------------------------------------------------------
  // GET /-/packages (jobs/installed_packages.py): what a file declares, grouped by that file,
  // and what the user added (a notebook's header, marimo's Install button, a terminal), with
  // the offer to add the latter to requirements.txt (POST /-/requirements). Fetched when the
  // panel opens and when an install or the user's packages change.
  new MutationObserver(() => { if (!panel.hidden) refreshPackages(); })
    .observe(panel, { attributes: true, attributeFilter: ["hidden"] });

  let packagesAsked = null;
  async function refreshPackages() {
    if (packagesAsked) { packagesAsked.again = true; return; }
    packagesAsked = { again: false };
    try {
      const response = await fetch("/-/packages", { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (response.ok) renderPackages(await response.json());
      else if (response.status === 409) renderPackagesNote("Not known yet: the Python environment is being prepared.");
    } catch (e) { /* asked again when the panel opens */ }
    const again = packagesAsked.again;
    packagesAsked = null;
    if (again) refreshPackages();
  }

  function renderPackagesNote(text) {
    packagesBox.replaceChildren(packagesBox.firstChild, el("p", { class: "mo-orch-muted", text }));
  }

  function packageItem(entry, extra) {
    const version = entry.version ? " " + entry.version : " (not installed)";
    return el("li", { "data-package": entry.name }, el("span", { class: "mo-orch-pkg", text: entry.name + version }), ...extra);
  }

  function renderPackages(answer) {
    if (!answer || !Array.isArray(answer.declared) || !Array.isArray(answer.added_by_you)) return;
    const file = typeof answer.file === "string" && answer.file ? answer.file : "requirements.txt";
    const groups = new Map(); // the first file that names a package -> its entries
    for (const entry of answer.declared) {
      const from = (entry.for && entry.for[0]) || file;
      if (!groups.has(from)) groups.set(from, []);
      groups.get(from).push(entry);
    }
    const parts = [packagesBox.firstChild];
    for (const [from, entries] of groups) {
      parts.push(el("div", { class: "mo-orch-group", "data-group": "declared", "data-file": from },
        el("h4", { text: "From " + from }),
        el("ul", {}, ...entries.map((entry) => packageItem(entry,
          entry.for.length > 1 ? [el("span", { class: "mo-orch-muted", text: " · also in " + entry.for.slice(1).join(", ") })] : [])))));
    }
    if (answer.added_by_you.length) {
      parts.push(el("div", { class: "mo-orch-group", "data-group": "added-by-you" },
        el("h4", { text: "Added by you" }),
        el("ul", {}, ...answer.added_by_you.map((entry) => {
          const where = entry.in && entry.in.length ? " · in " + entry.in.join(", ") + "'s header"
            : " · installed from the editor; kept across restarts";
          const extra = [el("span", { class: "mo-orch-muted", text: where })];
          if (EDIT && entry.offer) {
            const add = el("button", { type: "button", "aria-label": "Add to " + file + ": " + entry.name + " " + entry.version }, "Add to " + file);
            add.addEventListener("click", () => addUserPackage(entry.name, add));
            extra.push(add);
          }
          return packageItem(entry, extra);
        }))));
    }
    if (!groups.size && !answer.added_by_you.length) parts.push(el("p", { class: "mo-orch-muted", text: "No packages of your own yet: " + file + " names none." }));
    const counted = [];
    if (answer.dependencies) counted.push(answer.dependencies + " other package" + (answer.dependencies > 1 ? "s" : "") + " (what these need, and the installer)");
    if (answer.more) counted.push(answer.more + " more not listed");
    if (counted.length) parts.push(el("p", { class: "mo-orch-muted", "data-packages": "dependencies", text: "And " + counted.join("; ") + "." }));
    packagesBox.replaceChildren(...parts);
  }

  async function addUserPackage(name, button) {
    button.disabled = true;
    try {
      const response = await fetch("/-/requirements", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json" }, body: JSON.stringify({ add: name }),
      });
      const answer = await response.json().catch(() => ({}));
      if (response.ok) {
        notice("requirements-added", answer.added + " added to " + answer.file, true);
        refreshPackages();
        return;
      }
      result.textContent = answer.error || "Adding " + name + " was refused (" + response.status + ").";
    } catch (e) {
      result.textContent = "The server could not be reached; try again in a moment.";
    }
    button.disabled = false;
  }

  // -- one events stream per browser -------------------------------------------------------
  const CHANNEL = "marimo-orchestrator-status";
  let channel = null;
  try {
    channel = typeof BroadcastChannel === "function" ? new BroadcastChannel(CHANNEL) : null;
  } catch (e) { /* no sharing here: this page has its own stream */ }
  let source = null;

  function publish(status) {
    handle(status);
    if (channel) channel.postMessage({ type: "status", status });
  }

  function openStream() {
    root.dataset.events = "leader";
    if (source) return;
    source = new EventSource("/-/events");
    source.addEventListener("status", (event) => {
      try { publish(JSON.parse(event.data)); } catch (e) { /* a malformed event: the next corrects it */ }
    });
    source.onerror = () => {
      // The browser retries a dropped stream by itself; one it gave up on (an answer that was
      // not a stream, such as a sign-in that expired) is tried again later.
      if (source && source.readyState === EventSource.CLOSED) {
        source = null;
        setTimeout(openStream, 5000);
      }
    };
  }

  function closeStream() {
    root.dataset.events = "follower";
    if (source) source.close();
    source = null;
  }

  if (channel) {
    channel.onmessage = (event) => {
      if (event.data && event.data.type === "status") handle(event.data.status);
    };
  }

  async function fetchOnce() {
    try {
      const response = await fetch("/-/status", { credentials: "same-origin" });
      if (response.ok) handle(await response.json());
    } catch (e) { /* the stream brings it */ }
  }

  function leadWithLock() {
    // Granted to one tab at a time; held until that tab goes away. Refused where storage is
    // (a third-party frame whose browser blocks its storage): then the heartbeat decides, and
    // without storage each such frame has its own stream.
    try {
      navigator.locks.request(CHANNEL, () => new Promise(() => openStream())).catch(leadWithHeartbeat);
    } catch (e) {
      leadWithHeartbeat();
    }
  }

  function leadWithHeartbeat() {
    const KEY = CHANNEL + ":leader";
    const me = Math.random().toString(36).slice(2);
    const STALE = 75000; // hidden tabs' timers may run once a minute
    function beat() {
      let leader = null;
      try { leader = JSON.parse(localStorage.getItem(KEY) || "null"); } catch (e) { /* unreadable: take over */ }
      if (!leader || leader.id === me || Date.now() - leader.at > STALE) {
        try { localStorage.setItem(KEY, JSON.stringify({ id: me, at: Date.now() })); } catch (e) { return openStream(); }
        openStream();
      } else closeStream();
    }
    window.addEventListener("pagehide", () => {
      try {
        const leader = JSON.parse(localStorage.getItem(KEY) || "null");
        if (leader && leader.id === me) localStorage.removeItem(KEY);
      } catch (e) { /* nothing to release */ }
    });
    window.addEventListener("storage", (event) => { if (event.key === KEY && !event.newValue) beat(); });
    beat();
    setInterval(beat, 20000);
  }

  root.dataset.events = "follower";
  fetchOnce();
  if (!channel) openStream();
  else if (navigator.locks && typeof navigator.locks.request === "function") leadWithLock();
  else leadWithHeartbeat();
})();
