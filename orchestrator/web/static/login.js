// Sign-in: inside the Quix portal's iframe, ask the parent for a token (postMessage); otherwise
// the form takes a Personal Access Token (quix) or the access token (token mode). The field is
// focused on load, and the login URL the terminal prints, pasted whole, signs in with its token
// (the server reads such a URL too: orchestrator/web/login.py token_from_login_url).
"use strict";
(function () {
  const mode = document.body.dataset.mode;
  const next = document.body.dataset.next || "/";
  const label = document.getElementById("token-label");
  const hint = document.getElementById("hint");
  const error = document.getElementById("error");
  const inIframe = window.parent && window.parent !== window;
  // Only the portal's own pages may hand over a token (any site can frame this page).
  const portalOrigins = (document.body.dataset.portalOrigins || "")
    .split(",").map((origin) => origin.trim()).filter((origin) => origin);
  if (mode === "quix") {
    label.textContent = "Quix Personal Access Token";
    hint.textContent = "Open this page from the Quix portal to sign in automatically, or paste a token from your Quix profile.";
  } else {
    hint.textContent = "The token is printed in the server's log when it starts, or set with ORCHESTRATOR_TOKEN.";
  }

  const field = document.getElementById("token");
  if (document.activeElement !== field) field.focus();

  // ".../-/login?token=abc&next=..." → "abc"; anything else is sent as it is (a URL of this page
  // whose token is missing or repeated is left for the server to refuse).
  function tokenFrom(text) {
    const value = text.trim();
    if (!/^(https?:\/\/|\/-\/login)/i.test(value)) return value;
    let url;
    try { url = new URL(value, window.location.href); } catch (e) { return value; }
    if (url.pathname.replace(/\/+$/, "") !== "/-/login") return value;
    const tokens = url.searchParams.getAll("token");
    return tokens.length === 1 && tokens[0] ? tokens[0] : value;
  }

  async function signIn(token) {
    let response;
    try {
      response = await fetch("/-/login", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ token: token, next: next }),
      });
    } catch (e) {
      error.textContent = "The server could not be reached; try again in a moment.";
      return;
    }
    const body = await response.json().catch(() => ({}));
    document.getElementById("iframe-status").hidden = true;
    if (!(response.ok && body.ok)) { error.textContent = body.error || "Sign-in failed."; return; }
    const target = body.next || "/";
    // Inside a cross-site iframe the browser may drop the session cookie (third-party cookies
    // blocked): going on would land here again and ask the portal again, forever. Check first.
    const probe = await fetch("/-/status", { credentials: "same-origin" }).catch(() => null);
    if (probe && probe.status === 401) {
      error.textContent = inIframe
        ? "Your browser blocked this site's sign-in cookie inside "
          + (mode === "quix" ? "the Quix portal" : "this frame")
          + " (third-party cookies are off). Open marimo in its own tab, or allow cookies for this site."
        : "Your browser did not keep the sign-in cookie. Allow cookies for this site and try again.";
      const link = document.getElementById("new-tab");
      link.href = target;
      document.getElementById("cookie-help").hidden = !inIframe;
      return;
    }
    window.location.replace(target);
  }

  // The form signs in with fetch too: the page's "Referrer-Policy: no-referrer" makes the
  // browser send "Origin: null" with a plain form post, which the server refuses as cross-site.
  const form = document.getElementById("login-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    error.textContent = "";
    try {
      await signIn(tokenFrom(field.value));
    } finally {
      button.disabled = false;
    }
  });

  if (mode === "quix" && inIframe && portalOrigins.length) {
    document.getElementById("iframe-status").hidden = false;
    window.addEventListener("message", (event) => {
      const data = event.data;
      if (event.source !== window.parent || !portalOrigins.includes(event.origin)) return;
      if (!data || data.type !== "AUTH_TOKEN" || !data.token) return;
      signIn(String(data.token));
    });
    // A targeted request: a parent of another origin never even sees it.
    for (const origin of portalOrigins) {
      window.parent.postMessage({ type: "REQUEST_AUTH_TOKEN" }, origin);
    }
  }
})();
