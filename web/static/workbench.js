/* Marker workbench: keyboard-first scoring (type, Enter, next), lease heartbeat, prefetch. */
(function () {
  "use strict";
  var root = document.getElementById("workbench");
  if (!root) { return; }
  var d = root.dataset, t = MC.t;
  var itemId = parseInt(d.item, 10), queue = d.queue;
  var $ = function (id) { return document.getElementById(id); };
  var score = $("score"), msg = $("score-msg"), img = $("item-image"), chip = $("code-chip");
  var task = null, code = null, shownAt = 0, requestId = null, busy = false, zoom = 1, rot = 0, waiting = false;

  function toCp(text) {                 // exact: centipoints from "12", "3.5", "0.25"
    var m = /^\s*(\d+)(?:\.(\d{1,2}))?\s*$/.exec(text);
    if (!m) { return null; }
    return parseInt(m[1], 10) * 100 + parseInt(((m[2] || "") + "00").slice(0, 2), 10);
  }
  var maxCp = toCp(d.max), stepCp = toCp(d.step);

  function say(text, kind) { msg.textContent = text || ""; msg.className = "msg " + (kind || ""); }

  function validate() {
    if (code) { return true; }
    var cp = toCp(score.value);
    if (score.value.trim() === "") { say(""); return false; }
    if (cp === null) { say(t.invalid_score, "error"); return false; }
    if (cp > maxCp) { say(t.invalid_score + ": " + t.max + " " + d.max, "error"); return false; }
    if (stepCp && cp % stepCp !== 0) { say(t.invalid_score + ": " + t.step + " " + d.step, "error"); return false; }
    say(""); return true;
  }

  function applyView() { img.style.transform = "scale(" + zoom + ") rotate(" + rot + "deg)"; }

  function setCode(c) {
    code = (code === c) ? null : c;
    chip.hidden = !code; chip.textContent = code || "";
    if (code) { score.value = ""; }
    say("");
  }

  function clearForm() {
    score.value = ""; code = null; chip.hidden = true;
    Array.prototype.forEach.call(document.querySelectorAll('input[name="flag"]'), function (c) { c.checked = false; });
    say("");
  }

  function show(next) {
    task = next; requestId = null; clearForm();
    var has = !!task;
    score.disabled = !has; $("submit").disabled = !has;
    if (!has) { img.hidden = true; $("no-image").hidden = true; say(t.no_more, "info"); waiting = true; return; }
    waiting = false;
    $("scheme-text").textContent = task.scheme_text || "";
    var earlier = task.earlier_marks || [];
    $("earlier").hidden = earlier.length === 0;
    var list = $("earlier-list"); list.textContent = "";
    earlier.forEach(function (m) { list.appendChild(MC.el("li", {}, m.kind + ": " + (m.condition_code || m.score))); });
    if (task.image_url) { img.hidden = false; $("no-image").hidden = true; img.src = task.image_url; }
    else { img.hidden = true; img.removeAttribute("src"); $("no-image").hidden = false; }
    zoom = 1; rot = 0; applyView();
    shownAt = Date.now();
    score.focus();
  }

  function preloadThenShow(next) {
    if (next && next.image_url) {
      var pre = new Image();
      pre.onload = pre.onerror = function () { show(next); };
      pre.src = next.image_url;
    } else { show(next); }
  }

  function claim() {
    return MC.api("POST", d.claimUrl, {queue: queue}).then(function (r) { preloadThenShow(r.task); },
      function (e) { show(null); say(e.message, "error"); });
  }

  function refreshSide() {
    MC.api("GET", d.progressUrl).then(function (p) {
      $("done-today").textContent = p.done_today; $("cap").textContent = p.cap;
      $("per-hour").textContent = p.per_hour; $("cap-bar").max = p.cap; $("cap-bar").value = p.done_today;
    }, function () {});
    MC.api("GET", d.recentUrl).then(function (r) {
      var ol = $("recent"); ol.textContent = "";
      r.marks.forEach(function (m) {
        ol.appendChild(MC.el("li", {"class": m.revisable ? "open" : "closed"},
          (m.condition_code || m.score) + " · " + m.submitted_at.slice(11, 16)));
      });
    }, function () {});
  }

  function submit() {
    if (!task || busy) { return; }
    if (!validate()) { if (!code && score.value.trim() === "") { say(t.invalid_score, "error"); } score.focus(); return; }
    busy = true;
    // Nothing can be typed into a submitted task: the box comes back with the next one (show).
    score.disabled = true; $("submit").disabled = true;
    requestId = requestId || (window.crypto && crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random());
    var flags = Array.prototype.map.call(document.querySelectorAll('input[name="flag"]:checked'), function (c) { return c.value; });
    MC.api("POST", d.submitUrl, {token: task.token, score: code ? null : score.value.trim(), condition_code: code,
      flags: flags, request_id: requestId, dwell_ms: Date.now() - shownAt, next: true, item_id: itemId, queue: queue})
      .then(function (r) {
        busy = false;
        say(t.saved + " " + (r.result.condition_code || r.result.score), "ok");
        preloadThenShow(r.next);
        if (!r.next && r.next_error) { say(r.next_error, "error"); }
        refreshSide();
      }, function (e) {
        busy = false;
        score.disabled = false; $("submit").disabled = false;
        if (e.error === "lease_lost") { say(t.lease_lost, "error"); claim(); return; }
        if (e.status === 0) { say(t.network, "error"); return; }      // same request id on retry: idempotent
        requestId = null; say(e.message, "error"); score.focus();
      });
  }

  function report(kind) {
    if (!task) { return; }
    MC.api("POST", d.problemUrl, {token: task.token, kind: kind}).then(function () {
      say(t.reported, "ok"); claim(); refreshSide();
    }, function (e) { say(e.message, "error"); });
  }

  $("score-form").addEventListener("submit", function (ev) { ev.preventDefault(); submit(); });
  score.addEventListener("input", function () { if (code && score.value) { code = null; chip.hidden = true; } validate(); });
  score.addEventListener("keydown", function (ev) {
    var k = ev.key;
    if (ev.altKey && /^[1-4]$/.test(k)) {
      var box = document.querySelectorAll('input[name="flag"]')[parseInt(k, 10) - 1];
      if (box) { box.checked = !box.checked; } ev.preventDefault(); return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    var codes = {n: "NR", o: "OT", i: "IL", r: "RF"};
    if (codes[k.toLowerCase()]) { setCode(codes[k.toLowerCase()]); ev.preventDefault(); return; }
    if (k === "+" || k === "=") { zoom = Math.min(4, zoom * 1.25); applyView(); ev.preventDefault(); return; }
    if (k === "-") { zoom = Math.max(0.25, zoom / 1.25); applyView(); ev.preventDefault(); return; }
    if (k === "f") { zoom = 1; applyView(); ev.preventDefault(); return; }
    if (k === "]") { rot = (rot + 90) % 360; applyView(); ev.preventDefault(); return; }
    if (k === "[") { rot = (rot + 270) % 360; applyView(); ev.preventDefault(); return; }
    if (k === "Escape") { clearForm(); ev.preventDefault(); }
  });
  Array.prototype.forEach.call(document.querySelectorAll("button.code"), function (b) {
    b.addEventListener("click", function () { setCode(b.dataset.code); score.focus(); });
  });
  Array.prototype.forEach.call(document.querySelectorAll("button.problem"), function (b) {
    b.addEventListener("click", function () { report(b.dataset.kind); });
  });
  $("zoom-in").addEventListener("click", function () { zoom = Math.min(4, zoom * 1.25); applyView(); });
  $("zoom-out").addEventListener("click", function () { zoom = Math.max(0.25, zoom / 1.25); applyView(); });
  $("zoom-fit").addEventListener("click", function () { zoom = 1; applyView(); });
  $("rotate").addEventListener("click", function () { rot = (rot + 90) % 360; applyView(); });

  // Keep the lease alive while the page is open (the engine's renew_lease).
  setInterval(function () {
    if (task) { MC.api("POST", d.renewUrl, {token: task.token}).catch(function (e) {
      if (e.error === "lease_lost") { say(t.lease_lost, "error"); claim(); }
    }); }
  }, 60000);
  // Live: when new work appears (third marks, released or expired leases), an idle page picks it up.
  var retry = MC.coalesce(function () { if (waiting) { claim(); } refreshSide(); }, 300);
  MC.live([d.topic], function () { retry(); });
  claim(); refreshSide();
})();
