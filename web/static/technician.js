/* Technician console: batch progress bars update live from OutboxEvent topic batch:<id>. */
(function () {
  "use strict";
  var root = document.getElementById("technician");
  if (!root) { return; }
  var topics = (root.dataset.topics || "").split(" ").filter(Boolean);
  function refresh() {
    MC.api("GET", root.dataset.batchesUrl).then(function (r) {
      r.batches.forEach(function (b) {
        var row = document.querySelector('#batch-table tr[data-batch="' + b.id + '"]');
        if (!row) { return; }
        row.querySelector(".b-status").textContent = b.status;
        row.querySelector(".b-cards").textContent = b.cards;
        row.querySelector(".b-bar").value = b.read_pct;
        row.querySelector(".b-pct").textContent = b.read_pct;
        row.querySelector(".b-exc").textContent = b.exceptions;
      });
    }, function () {});
  }
  MC.live(topics, MC.debounce(refresh, 300));
})();
