// The Environment panel and notices inside marimo's pages (added by the proxy's HTML transform).
// Invariants: it only reads /-/status and /-/events and posts to /-/restart, like the loading
// page (and /-/requirements: the packages a user installed, offered for requirements.txt);
// it never reloads the page (an open tab survives restarts by itself, see README); one
// events stream per browser: one tab leads (a Web Lock, else a heartbeat in localStorage) and
// shares every status over a BroadcastChannel; in run mode it shows status only, no actions.
// What an install changed and the packages a user added are the server's word (/-/status: the
// requirements step's ``changes``, ``user_packages``): installer output is never read here.
// The button and the notices share a strip (the dock) placed in a part of marimo's page that
// nothing of marimo's uses (measured, see place()); notices never lie over the notebook.
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
  const { LABELS, plainMessage } = window.__marimoOrchestratorWords; // words.js
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
  const suffix = el("span", { class: "mo-orch-suffix" }); // ": needs attention", ": working"
  const label = el("span", { class: "mo-orch-label" }, "Environment", suffix);
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
  const moreNotices = el("button", { type: "button", class: "mo-orch-more-notices", "aria-expanded": "false", hidden: true });
  // The button and the notices share one strip (the dock), placed where marimo has nothing.
  const dock = el("div", { class: "mo-orch-dock", "data-place": "corner" }, toggle, banners, moreNotices);
  const root = el("div", { class: "mo-orch", "data-orchestrator": "panel" }, dock, panel);

  function mount() {
    if (!document.body) return setTimeout(mount, 50);
    document.body.append(root);
    watchPage();
  }

  // -- where the dock goes ----------------------------------------------------------------
  // Measured from marimo's page, never assumed (marimo 0.25: edit mode and a reader's tab have
  // a footer bar, [data-testid=chrome-footer], whose children are its indicators with a free
  // stretch between them; run mode has no footer, only a fixed menu at the top right,
  // [data-testid=notebook-actions-dropdown]). The dock takes the widest free stretch of the
  // footer, which no pane, card, banner or cell ever reaches (they all end above the footer);
  // without a footer it sits left of run mode's menu, in the band above the first output;
  // without either, in the bottom-left corner. Its z-index equals the footer's (50) and it
  // comes later in the document: above the footer's background, below marimo's toasts,
  // menus and dialogs (z-index 50 and up, added later still).
  const GAP = 8; // clear space kept to marimo's own elements
  const DOCK_HEIGHT = 28;
  function visibleBox(node) {
    if (!node || !node.isConnected) return null;
    const r = node.getBoundingClientRect();
    return r.width > 0 && r.height > 0 ? r : null;
  }
  function footerStretch(footer, box) {
    // The widest horizontal stretch of the footer between its visible children.
    const edges = [];
    for (const child of footer.children) {
      const r = visibleBox(child);
      if (r) edges.push([r.left, r.right]);
    }
    edges.sort((a, b) => a[0] - b[0]);
    let from = box.left;
    let best = null;
    for (const [left, right] of [...edges, [box.right, box.right]]) {
      if (left - from > (best ? best.right - best.left : 0)) best = { left: from, right: left };
      from = Math.max(from, right);
    }
    return best;
  }
  let placedAt = "";
  function place() {
    const footer = document.querySelector("[data-testid=chrome-footer]");
    const footerBox = visibleBox(footer);
    const stretch = footerBox && footerStretch(footer, footerBox);
    const at = { where: "corner", left: "", right: "", top: "", width: "", room: Math.min(innerWidth - 2 * 12, 640) };
    if (stretch && stretch.right - stretch.left >= 2 * GAP + DOCK_HEIGHT) {
      at.where = "footer";
      at.room = stretch.right - stretch.left - 2 * GAP;
      at.left = stretch.left + GAP + "px";
      at.top = footerBox.top + (footerBox.height - DOCK_HEIGHT) / 2 + "px";
    } else {
      const menu = visibleBox(document.querySelector("[data-testid=notebook-actions-dropdown]"));
      if (menu) {
        at.where = "top";
        const back = visibleBox(document.querySelector("#App a[aria-label]"));
        const left = (back && back.top < menu.bottom ? back.right : 0) + 2 * GAP;
        at.room = Math.max(DOCK_HEIGHT, menu.left - GAP - left);
        at.right = document.documentElement.clientWidth - menu.left + GAP + "px"; // fixed: from the viewport's edge, scrollbar aside
        at.top = menu.top + (menu.height - DOCK_HEIGHT) / 2 + "px";
      }
    }
    if (at.where !== "corner") at.width = at.room + "px";
    const key = JSON.stringify(at);
    if (key === placedAt) return; // nothing moved: nothing written
    placedAt = key;
    Object.assign(dock.style, { left: at.left, right: at.right, top: at.top, width: at.width });
    dock.dataset.place = at.where;
    // Narrow: the button's state only as its dot (and its name); compact: only the dot.
    dock.classList.toggle("mo-orch-narrow", at.room < 560);
    dock.classList.toggle("mo-orch-compact", at.room < 200);
    if (!panel.hidden) placePanel();
    renderNotices();
  }
  function placePanel() {
    const box = toggle.getBoundingClientRect();
    const width = Math.min(420, innerWidth - 24);
    const style = panel.style;
    style.width = width + "px";
    style.left = Math.max(12, Math.min(dock.dataset.place === "top" ? box.right - width : box.left, innerWidth - width - 12)) + "px";
    if (dock.dataset.place === "top") {
      style.top = box.bottom + GAP + "px";
      style.bottom = "";
      style.maxHeight = innerHeight - box.bottom - 2 * GAP + "px";
    } else {
      style.top = "";
      style.bottom = innerHeight - box.top + GAP + "px";
      style.maxHeight = box.top - 2 * GAP + "px";
    }
  }

  let placing = 0;
  function schedulePlace() {
    if (!placing) placing = requestAnimationFrame(() => { placing = 0; place(); });
  }
  function watchPage() {
    // marimo renders after this script runs and re-renders at will: placement follows every
    // change of the page (batched to one measure per frame), the window's size, and a slow
    // timer as a safety net. The same changes tell whether a cell ran (the restart notice).
    new MutationObserver((records) => {
      if (records.every((r) => root.contains(r.target))) return;
      schedulePlace();
      noticeCellRuns();
    }).observe(document.body, { childList: true, subtree: true, attributes: true, attributeFilter: ["data-status", "data-connection-state"], characterData: true });
    addEventListener("resize", schedulePlace);
    setInterval(schedulePlace, 2000);
    setInterval(tickNotices, 1000);
    schedulePlace();
  }
  mount();

  let returnTo = null; // where focus was when the panel opened: it goes back there on close
  function setOpen(open) {
    if (open) placePanel();
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
  // Escape also closes the panel when focus fell to the page's body (a status update redrew
  // what was focused inside the panel).
  window.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !panel.hidden && (!document.activeElement || document.activeElement === document.body)) {
      event.stopPropagation();
      closePanel();
      return;
    }
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
  // They live in the dock, never over the notebook: one at a time (the newest; "+N" unfolds
  // all of them, full text and details, above the dock until Escape or a second click), each
  // kept only while it holds: a banner (a failed install, a state that will not persist, a
  // sync problem) while its cause stands, until dismissed for this boot; the restart notice
  // until a cell ran on the new kernel (noticeCellRuns; in run mode, where the app reruns by
  // itself, like an install notice); a changed version's notice until
  // marimo restarts; other install notices for ``ttl`` ms of being in view (a hovered or
  // unfolded notice waits). The installer's raw text is never in a notice: it is in the panel
  // once, folded under "Details", and a failed install's banner has a "Details" button that
  // opens the panel there.
  const shown = new Map(); // kind -> element, in the order they came
  const INSTALL_TTL = 20000;
  let expanded = false;
  function dismissedKey(kind, version) { return "marimo-orchestrator:dismissed:" + (latest ? latest.boot_id : "") + ":" + kind + ":" + version; }
  function isDismissed(kind, version) { try { return localStorage.getItem(dismissedKey(kind, version)) === "1"; } catch (e) { return false; } }

  function banner(kind, text, version, tone, actions) {
    if (isDismissed(kind, version)) return clearNotice(kind);
    show(kind, text, tone, () => {
      try { localStorage.setItem(dismissedKey(kind, version), "1"); } catch (e) { /* this page only */ }
      clearNotice(kind);
    }, { actions });
  }

  // ``options``: ttl (ms in view before it goes), untilRan (the restart notice), untilRestart
  // (gone with the kernel it is about), actions (buttons shown with it).
  function notice(kind, text, dismissable, options) {
    show(kind, text, "info", dismissable ? () => clearNotice(kind) : null, options || {});
  }

  function show(kind, text, tone, onDismiss, options) {
    const old = shown.get(kind);
    const key = tone + "\n" + text;
    if (old && old.dataset.key === key) return;
    if (old) old.remove();
    const node = el("div", { class: "mo-orch-banner " + tone, "data-kind": kind, role: tone === "problem" ? "alert" : "status" },
      el("span", { class: "mo-orch-text", text, title: text }));
    node.dataset.key = key;
    node.dataset.text = text;
    if (options.actions && options.actions.length) node.append(el("span", { class: "mo-orch-notice-actions" }, ...options.actions));
    if (onDismiss) {
      const dismiss = el("button", { type: "button", class: "mo-orch-dismiss", "aria-label": "Dismiss: " + text, title: "Dismiss" }, "×");
      dismiss.addEventListener("click", onDismiss);
      node.append(dismiss);
    }
    node.mo = { ttl: options.ttl || 0, seen: 0, untilRan: !!options.untilRan, untilRestart: !!options.untilRestart };
    if (options.untilRan) watchRuns(node);
    shown.set(kind, node);
    banners.append(node);
    renderNotices();
  }

  function clearNotice(kind) {
    const node = shown.get(kind);
    if (!node) return;
    const hadFocus = node.contains(document.activeElement);
    node.remove();
    shown.delete(kind);
    renderNotices();
    if (hadFocus) (moreNotices.hidden ? toggle : moreNotices).focus(); // not lost to the body
  }

  function renderNotices() {
    const nodes = [...shown.values()];
    const current = nodes[nodes.length - 1];
    if (!nodes.length) expanded = false;
    for (const node of nodes) node.classList.toggle("mo-orch-current", node === current);
    dock.classList.toggle("mo-orch-expanded", expanded);
    dock.classList.toggle("mo-orch-has-notices", nodes.length > 0);
    const others = nodes.length - 1;
    moreNotices.hidden = !(expanded || others > 0 || (current && overflows(current)));
    moreNotices.setAttribute("aria-expanded", String(expanded));
    moreNotices.textContent = expanded ? "Less" : others > 0 ? "+" + others : "More";
    moreNotices.setAttribute("aria-label", expanded ? "Fold the Environment notices"
      : others > 0 ? "Show all " + nodes.length + " Environment notices" : "Show the whole notice");
  }

  function overflows(node) {
    const text = node.querySelector(".mo-orch-text");
    return !!text && !expanded && text.scrollWidth > text.clientWidth + 1;
  }

  function setExpanded(value) {
    expanded = value;
    renderNotices();
  }
  moreNotices.addEventListener("click", () => setExpanded(!expanded));
  dock.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && expanded) { event.stopPropagation(); setExpanded(false); moreNotices.focus(); }
  });
  document.addEventListener("pointerdown", (event) => { if (expanded && !dock.contains(event.target)) setExpanded(false); }, true);

  // Install notices go after ``ttl`` ms in view: the current one, the page visible, not
  // hovered, focused or unfolded (a notice read is not taken away mid-sentence).
  function tickNotices() {
    const nodes = [...shown.values()];
    const current = nodes[nodes.length - 1];
    if (!current || !current.mo || !current.mo.ttl || expanded || document.hidden) return;
    const focused = document.activeElement;
    if (banners.matches(":hover") || banners.contains(focused) || focused === moreNotices) return;
    current.mo.seen += 1000;
    if (current.mo.seen >= current.mo.ttl) clearNotice(current.dataset.kind);
  }

  // -- has a cell run on the new kernel? ---------------------------------------------------
  // What the editor shows of marimo's kernel (marimo 0.25): each cell's status element,
  // [data-testid=cell-status], has data-status "queued" or "running" while it runs and shows
  // how long it took when it is done; #App[data-connection-state] is OPEN while the tab talks
  // to a kernel; POST /api/kernel/run is how the editor asks for a run. A cell ran on the new
  // kernel once, after the notice came, the tab was connected and asked for a run that was
  // accepted, or a cell was seen running, or a cell's time changed; and no cell is queued or
  // running any more. (Run mode's app reruns by itself: its notice just times out.)
  let runWatch = null; // { node, times, asked, seen }
  function cellTimes() {
    const times = new Map();
    for (const status of document.querySelectorAll("[data-testid=cell-status]")) {
      const cell = status.closest("[data-cell-id]");
      if (cell) times.set(cell.dataset.cellId, status.dataset.status + ":" + status.textContent);
    }
    return times;
  }
  function watchRuns(node) {
    runWatch = { node, times: cellTimes(), asked: false, seen: false, since: performance.now() };
  }
  const RUN_PATHS = ["/api/kernel/run"];
  try {
    new PerformanceObserver((list) => {
      if (!runWatch) return;
      for (const entry of list.getEntries()) {
        const path = new URL(entry.name, location.href).pathname;
        const status = entry.responseStatus || 0; // 0: not known (older browsers)
        if (entry.startTime >= runWatch.since && RUN_PATHS.some((p) => path.endsWith(p)) && (status === 0 || (status >= 200 && status < 300))) {
          runWatch.asked = true;
        }
      }
      noticeCellRuns();
    }).observe({ type: "resource", buffered: false });
  } catch (e) { /* no resource timing: the cells' own statuses decide */ }

  function noticeCellRuns() {
    const watch = runWatch;
    if (!watch) return;
    if (!watch.node.isConnected) { runWatch = null; return; }
    const app = document.getElementById("App");
    if (app && app.dataset.connectionState && app.dataset.connectionState !== "OPEN") return;
    const now = cellTimes();
    let busy = false;
    for (const [id, value] of now) {
      const state = value.slice(0, value.indexOf(":"));
      if (state === "queued" || state === "running") { busy = true; watch.seen = watch.seen || state === "running"; }
      else if (state === "idle" && value !== "idle:" && watch.times.has(id) && watch.times.get(id) !== value) watch.seen = true;
    }
    if (busy || !(watch.asked || watch.seen)) return;
    runWatch = null;
    clearNotice(watch.node.dataset.kind);
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
      notice("installed", said + ": run the cells that import them again.", true, { ttl: INSTALL_TTL });
    } else if (c.recorded.length) {
      notice("installed", said + ".", true, { ttl: INSTALL_TTL });
    } else if (!shown.has("installed")) { // what an earlier run changed stays in view
      notice("installed", "Requirements installed: nothing changed.", true, { ttl: INSTALL_TTL / 2 });
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
          + " installed from the editor; kept across restarts.", true, { ttl: INSTALL_TTL });
      }
    }
    userPackages = now;
  }

  // Holds until marimo restarts (the new versions are then the ones imported).
  function changeNotice(text) {
    const restart = EDIT ? el("button", { type: "button", class: "mo-orch-yes" }, "Restart marimo") : null;
    if (restart) {
      restart.addEventListener("click", () => {
        if (panel.hidden) openPanel();
        askConfirm(ACTIONS[0]);
      });
    }
    notice("installed", text, true, { untilRestart: true, actions: restart ? [restart] : [] });
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
        for (const [kind, node] of shown) if (node.mo && node.mo.untilRestart) clearNotice(kind);
        if (EDIT) notice("kernel", "marimo restarted" + took + ": this notebook runs on a new kernel, so its variables are gone. Run your cells again.", true, { untilRan: true });
        else notice("kernel", "marimo restarted" + took + ": the app runs again on a new kernel.", true, { ttl: INSTALL_TTL }); // it reruns by itself
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

  function failureDetails() {
    const button = el("button", { type: "button", class: "mo-orch-yes" }, "Details");
    button.addEventListener("click", () => {
      if (panel.hidden) openPanel();
      const fold = panel.querySelector("[data-problem=requirements] details");
      if (!fold) return;
      fold.open = true;
      fold.querySelector("summary").focus();
      fold.scrollIntoView({ block: "nearest" });
    });
    return button;
  }

  function renderBanners(status, requirements) {
    if (requirements && requirements.status === "failed") {
      // Short: the plain words (file, line, package, what to do); "Details" opens the panel at
      // the failure, where the installer's own text is (once).
      const reason = requirements.message ? " " + requirements.message : "";
      banner("requirements", "The Python packages could not be installed." + reason, String(requirements.finished_at), "problem",
        requirements.detail ? [failureDetails()] : []);
    } else clearNotice("requirements");
    const state = status.state || {};
    if (state.persistent === false) {
      banner("state", state.warning || "The state is not persistent: packages installed now are lost at the next restart.", "1", "warning");
    } else clearNotice("state");
    const problem = syncProblem(status.sync);
    if (problem) banner("sync", "Saving notebooks to Quix: " + problem, problem, "warning");
    else clearNotice("sync");
    const troubled = (requirements && requirements.status === "failed") || state.persistent === false || !!problem || status.phase === "failed";
    suffix.textContent = troubled ? ": needs attention" : status.ready ? "" : ": working";
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
      el("p", {}, el("strong", { text: "The Python packages could not be installed" + (requirements.message ? ": " : ".") }), requirements.message || ""),
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
      else renderPackagesNote("The list of packages could not be read (" + response.status + "); it is asked again when the panel opens.");
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
        notice("requirements-added", answer.added + " added to " + answer.file, true, { ttl: INSTALL_TTL / 2 });
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
