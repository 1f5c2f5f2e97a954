// Sign-in: inside the Quix portal's iframe, ask the parent for a token (postMessage); otherwise
// the form takes a Personal Access Token (quix) or the access token (token mode).
"use strict";
(function () {
  const mode = document.body.dataset.mode;
  const next = document.body.dataset.next || "/";
  const label = document.getElementById("token-label");
  const hint = document.getElementById("hint");
  const error = document.getElementById("error");
  if (mode === "quix") {
    label.textContent = "Quix Personal Access Token";
    hint.textContent = "Open this page from the Quix portal to sign in automatically, or paste a token from your Quix profile.";
  } else {
    hint.textContent = "The token is printed in the server's log when it starts, or set with ORCHESTRATOR_TOKEN.";
  }

  async function signIn(token) {
    const response = await fetch("/-/login", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: token, next: next }),
    });
    const body = await response.json().catch(() => ({}));
    if (response.ok && body.ok) { window.location.replace(body.next || "/"); return; }
    document.getElementById("iframe-status").hidden = true;
    error.textContent = body.error || "Sign-in failed.";
  }

  const inIframe = window.parent && window.parent !== window;
  if (mode === "quix" && inIframe) {
    document.getElementById("iframe-status").hidden = false;
    window.addEventListener("message", (event) => {
      const data = event.data;
      if (event.source !== window.parent || !data || data.type !== "AUTH_TOKEN" || !data.token) return;
      signIn(String(data.token));
    });
    window.parent.postMessage({ type: "REQUEST_AUTH_TOKEN" }, "*");
  }
})();
