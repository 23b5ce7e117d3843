/* Team-leader calibration page: the marker statistics table (validity, bias, alarm, counts) and the
   validity / drift / means plots update live (Socket.IO hint → coalesced fetch, at most once a second), without a reload. */
(function () {
  "use strict";
  var root = document.getElementById("calibration-live");
  if (!root) { return; }
  var d = root.dataset;
  var tbody = document.querySelector("#statistics tbody");
  var CELLS = ["username", "count", "mean", "exact", "seeds", "validity", "seed_bias", "recheck"];

  function show(v) { return v === null || v === undefined ? "–" : String(v); }
  function forUser(template, userId) { return template.replace("/markers/0/", "/markers/" + userId + "/"); }

  function plot(url, alt) {
    var a = MC.el("a", {href: url});
    a.appendChild(MC.el("img", {src: url, alt: alt, width: "160", "class": "live-plot"}));
    return a;
  }

  function newRow(m) {
    var tr = MC.el("tr", {"data-user": m.user_id});
    CELLS.forEach(function (key) { tr.appendChild(MC.el("td", {"class": "s-" + key})); });
    tr.appendChild(MC.el("td", {"class": "s-alarm"}));
    var plots = MC.el("td");
    plots.appendChild(plot(forUser(d.validityUrl, m.user_id), d.tValidity));
    plots.appendChild(document.createTextNode(" "));
    plots.appendChild(plot(forUser(d.driftUrl, m.user_id), d.tDrift));
    tr.appendChild(plots);
    var cell = MC.el("td");
    var form = MC.el("form", {method: "post", action: forUser(d.suspendUrl, m.user_id), "class": "inline"});
    form.appendChild(MC.el("input", {type: "hidden", name: "csrf_token", value: MC.csrf()}));
    form.appendChild(MC.el("input", {name: "note", placeholder: d.tReason}));
    form.appendChild(MC.el("button", {}, d.tSuspend));
    cell.appendChild(form);
    tr.appendChild(cell);
    return tr;
  }

  function render(markers) {
    if (markers.length) {
      Array.prototype.forEach.call(tbody.querySelectorAll("tr.empty"), function (tr) { tr.remove(); });
    }
    markers.forEach(function (m) {
      var row = tbody.querySelector('tr[data-user="' + m.user_id + '"]');
      if (!row) { row = newRow(m); tbody.appendChild(row); }   // rows are updated in place: a reason being typed survives
      CELLS.forEach(function (key) { row.querySelector(".s-" + key).textContent = show(m[key]); });
      var alarm = row.querySelector(".s-alarm");
      alarm.textContent = m.alarm_label;
      alarm.dataset.alarm = m.alarm || "";
      alarm.classList.toggle("alarm", !!m.alarm);
    });
  }

  function reloadPlots() {
    var stamp = String(Date.now());
    Array.prototype.forEach.call(root.querySelectorAll("img.live-plot"), function (img) {
      var url = new URL(img.getAttribute("src"), window.location.href);
      url.searchParams.set("v", stamp);
      img.setAttribute("src", url.pathname + url.search);
    });
  }

  function refresh() {
    MC.api("GET", d.statsUrl).then(function (r) {
      render(r.markers);
      reloadPlots();
    }, function () {});
  }

  var later = MC.coalesce(refresh, 1000);
  MC.live(["item:" + d.item, "leader:" + d.item], function () { later(); }, function (ok) { if (ok) { later(); } });
})();
