/* The demo app's own script: a live countdown to the end of the session and a button that
   calls the app's API through portcullis.fetch (which refreshes the session when needed). */
(function () {
  "use strict";
  var left = document.getElementById("left");
  var out = document.getElementById("api-result");
  var ends = null;

  // A plain fetch, not portcullis.fetch: looking at the clock must not refresh the session
  // (that would keep it alive for ever); an expired access token keeps the last answer.
  function load() {
    fetch("/auth/session", { credentials: "same-origin" }).then(function (r) {
      return r.ok ? r.json() : null;
    }).then(function (s) {
      if (!s) return;
      var idle = Date.parse(s.idle_expires_at);
      var max = Date.parse(s.session_expires_at);
      ends = Math.min(isNaN(idle) ? Infinity : idle, isNaN(max) ? Infinity : max);
    }).catch(function () {});
  }

  function tick() {
    if (ends === null || !isFinite(ends)) return;
    var s = Math.max(0, Math.round((ends - Date.now()) / 1000));
    left.textContent = Math.floor(s / 60) + " min " + (s % 60) + " s";
  }

  document.getElementById("call-api").addEventListener("click", function () {
    out.textContent = "calling...";
    window.portcullis.fetch("/api/whoami").then(function (r) {
      return r.json();
    }).then(function (j) {
      out.textContent = JSON.stringify(j);
      load();
    }).catch(function (e) {
      out.textContent = "failed: " + e;
    });
  });
  window.addEventListener("portcullis:session-expiring", load);
  window.addEventListener("focus", load);
  load();
  setInterval(tick, 1000);
  setInterval(load, 15000);
})();
