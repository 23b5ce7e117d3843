/* Technician console: batch ingest and read-pass progress, live from OutboxEvent topic batch:<id>.
   Events are hints: each one re-fetches the numbers over HTTP (authorisation stays server-side). */
(function () {
  "use strict";
  var root = document.getElementById("batch");
  if (!root) { return; }
  var topics = (root.dataset.topics || "").split(" ").filter(Boolean);
  function set(id, text) { var e = document.getElementById(id); if (e) { e.textContent = text; } }
  function refresh() {
    MC.api("GET", root.dataset.progressUrl).then(function (p) {
      set("b-status", p.status);
      document.getElementById("ingest-bar").value = p.ingest.pct;
      set("ingest-pct", p.ingest.pct);
      set("ingest-pages", p.ingest.pages);
      set("ingest-accepted", p.ingest.accepted);
      set("ingest-rejected", p.ingest.rejected);
      p.reads.forEach(function (r) {
        document.getElementById("read" + r.read + "-bar").value = r.pct;
        set("read" + r.read + "-pct", r.pct);
        set("read" + r.read + "-count", r.done + " / " + r.total);
      });
      set("b-cards", p.cards);
      set("b-exc", p.exceptions);
      set("b-nodes", p.alive.length ? p.alive.join(", ") : "—");
      var notice = document.getElementById("node-notice");
      notice.hidden = !p.node_notice;
      set("node-text", p.node_notice || "");
      var err = document.getElementById("ingest-error");
      err.hidden = !p.ingest.error;
      if (p.ingest.error) { err.querySelector("span").textContent = p.ingest.error; }
      document.getElementById("b-complete").hidden = !p.complete;
    }, function () {});
  }
  var later = MC.coalesce(refresh, 250);
  MC.live(topics, later, function (ok) { if (ok) { later(); } });
})();
