/* Team-leader dashboard: counts and the marker table update live (Socket.IO hint → fetch). */
(function () {
  "use strict";
  var root = document.getElementById("leader");
  if (!root) { return; }
  var d = root.dataset;
  function pct(v) { return v === null || v === undefined ? "–" : v + "%"; }
  function refresh() {
    MC.api("GET", d.summaryUrl).then(function (r) {
      var s = r.summary;
      Array.prototype.forEach.call(document.querySelectorAll(".count .n"), function (el) {
        var v = s[el.dataset.key]; if (v !== undefined) { el.textContent = v; }
      });
      document.getElementById("item-progress").value = s.progress_pm;
      document.getElementById("progress-pct").textContent = Math.floor(s.progress_pm / 10);
    }, function () {});
    MC.api("GET", d.markersUrl).then(function (r) {
      r.markers.forEach(function (m) {
        var row = document.querySelector('#marker-table tr[data-user="' + m.user_id + '"]');
        if (!row) { return; }
        row.querySelector(".c-today").textContent = m.today;
        row.querySelector(".c-total").textContent = m.total;
        row.querySelector(".c-hour").textContent = m.per_hour;
        row.querySelector(".c-agree").textContent = pct(m.agreement_pct);
        row.querySelector(".c-third").textContent = pct(m.third_rate_pct);
      });
    }, function () {});
  }
  var later = MC.coalesce(refresh, 250);
  MC.live(["item:" + d.item, "leader:" + d.item], function () { later(); }, function (ok) { if (ok) { later(); } });
})();
