// edufilter console: follows a list upload on its status page (static/upload.js, no inline
// script: the CSP allows only 'self'). Without it the page refreshes itself (<noscript>).
"use strict";
(function () {
  const panel = document.getElementById("upload-progress");
  if (!panel || !panel.dataset.progressUrl) {
    return;
  }
  const bar = document.getElementById("upload-bar");
  const state = document.getElementById("upload-state");
  const bytesRead = document.getElementById("upload-bytes-read");
  const entries = document.getElementById("upload-entries");
  const number = new Intl.NumberFormat("en-US");
  const intervalMs = 500;

  async function poll() {
    let upload;
    try {
      const response = await fetch(panel.dataset.progressUrl, {
        credentials: "same-origin", cache: "no-store", headers: {"Accept": "application/json"},
      });
      if (!response.ok || !(response.headers.get("Content-Type") || "").startsWith("application/json")) {
        window.location.reload();  // signed out or gone: the page itself says what happened
        return;
      }
      upload = await response.json();
    } catch (error) {
      window.setTimeout(poll, intervalMs * 4);  // the gateway is busy or restarting: try again
      return;
    }
    bar.value = upload.progress;
    bar.textContent = Math.floor(upload.progress / 10) + "%";
    bytesRead.textContent = number.format(upload.bytes_read);
    entries.textContent = number.format(upload.entries_read);
    if (state.textContent !== upload.state_text) {
      state.textContent = upload.state_text;  // a live region: said once per change of state
    }
    if (upload.finished) {
      window.location.reload();  // the finished page: counts added, errors, refused entries
      return;
    }
    window.setTimeout(poll, intervalMs);
  }

  window.setTimeout(poll, intervalMs);
})();
