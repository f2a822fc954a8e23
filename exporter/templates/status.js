// Refreshes the time and the collectors' ages in place; never reloads the page under its reader.
(function () {
  "use strict";
  var body = document.body, seen = body.getAttribute("data-fingerprint");
  var every = Number(body.getAttribute("data-poll")) * 1000;
  var updated = document.getElementById("updated");
  var unreachable = document.getElementById("unreachable");
  var rows = document.querySelectorAll("tr[data-collector]");
  function put(el, text) { if (el && el.textContent !== String(text)) { el.textContent = text; } }
  function show(s) {
    put(updated, s.updated);
    updated.setAttribute("datetime", new Date(s.generated_at * 1000).toISOString());
    unreachable.hidden = true;
    if (document.title !== s.title) { document.title = s.title; }
    if (s.collectors.length === rows.length) {
      s.collectors.forEach(function (c, i) {
        ["state", "duration", "last_success", "errors"].forEach(function (field) {
          put(rows[i].querySelector('[data-field="' + field + '"]'), c[field] === null ? "\u2014" : c[field]);
        });
      });
    }
    if (s.fingerprint !== seen) { document.getElementById("changed").hidden = false; }
  }
  function poll() {
    fetch("status.json", {cache: "no-store", headers: {"Accept": "application/json"}})
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
      .then(show)
      .catch(function () {
        put(document.getElementById("unreachable-at"), new Date().toISOString().slice(11, 19) + " UTC");
        unreachable.hidden = false;
      });
  }
  setInterval(poll, every);
  poll();
}());
