// pgqueue dashboard: live counts on the queues page. Polls the JSON endpoint and
// updates the cells in place; a new or removed queue reloads the page. No framework,
// shipped in the package.
(function () {
  "use strict";
  var table = document.querySelector("table[data-stats-url]");
  if (!table) { return; }
  var url = table.getAttribute("data-stats-url");
  var every = parseInt(table.getAttribute("data-refresh-ms"), 10) || 2000;
  var status = document.querySelector("[data-live-status]");
  var counts = ["available", "scheduled", "running", "succeeded", "cancelled"];

  function setText(row, field, text) {
    var cell = row.querySelector('[data-field="' + field + '"]');
    if (cell && cell.textContent !== text) { cell.textContent = text; }
  }

  function apply(queues) {
    var rows = table.querySelectorAll("tbody tr[data-queue]");
    if (rows.length !== queues.length) { window.location.reload(); return; }
    for (var i = 0; i < queues.length; i++) {
      var q = queues[i];
      var row = rows[i];
      if (row.getAttribute("data-queue") !== q.queue) { window.location.reload(); return; }
      var pausedCell = row.querySelector('[data-field="paused"]');
      var wasPaused = pausedCell && pausedCell.textContent.trim() === "paused";
      if (wasPaused !== q.paused) { window.location.reload(); return; }
      for (var k = 0; k < counts.length; k++) { setText(row, counts[k], String(q[counts[k]])); }
      var dead = row.querySelector('[data-field="dead"]');
      var link = dead && dead.querySelector("a");
      if (link) { link.textContent = String(q.dead); } else if (dead) { dead.textContent = String(q.dead); }
      setText(row, "oldest_runnable_age", q.oldest_runnable_age_text);
    }
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
      .then(function (body) {
        apply(body.queues);
        if (status) { status.textContent = "live"; status.classList.remove("stale"); }
      })
      .catch(function () {
        if (status) { status.textContent = "not updating"; status.classList.add("stale"); }
      })
      .then(function () { window.setTimeout(poll, every); });
  }
  window.setTimeout(poll, every);
})();
