/* Shared helpers: CSRF-protected fetch, translated strings, live events with replay. No inline scripts (CSP). */
(function () {
  "use strict";
  var MC = window.MC = {};
  MC.t = JSON.parse(document.getElementById("mc-i18n").textContent || "{}");
  MC.csrf = function () { var m = document.querySelector('meta[name="csrf-token"]'); return m ? m.content : ""; };

  /* fetch JSON; rejects with {status, error, message} so every failure has a message for people. */
  MC.api = function (method, url, body) {
    var opts = {method: method, credentials: "same-origin",
                headers: {"Accept": "application/json", "X-CSRFToken": MC.csrf()}};
    if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
    return fetch(url, opts).then(function (r) {
      return r.text().then(function (text) {
        var data = {};
        try { data = text ? JSON.parse(text) : {}; } catch (e) { data = {message: text.slice(0, 200)}; }
        if (!r.ok) { data.status = r.status; if (!data.message) { data.message = r.statusText; } throw data; }
        return data;
      });
    }, function () { throw {status: 0, error: "network", message: MC.t.network}; });
  };

  MC.el = function (tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) { e.textContent = text; }
    return e;
  };

  /* Live events: subscribe to topics; replay from the last seen id after a reconnect. */
  MC.live = function (topics, onEvent, onStatus) {
    if (typeof io === "undefined") { return null; }
    var lastId = null;
    var socket = io({transports: ["websocket", "polling"]});
    function status(ok) {
      var badge = document.getElementById("live-status");
      if (badge) { badge.textContent = ok ? MC.t.connected : MC.t.disconnected; badge.className = ok ? "live on" : "live off"; }
      if (onStatus) { onStatus(ok); }
    }
    socket.on("connect", function () {
      socket.emit("subscribe", {topics: topics, since: lastId}, function (ack) {
        if (ack && ack.ok && lastId === null) { lastId = ack.head; }
        status(!!(ack && ack.ok));
      });
    });
    socket.on("disconnect", function () { status(false); });
    socket.on("outbox", function (ev) {
      if (lastId !== null && ev.id <= lastId) { return; }   // already seen (replay or a second drainer)
      lastId = ev.id;
      onEvent(ev);
    });
    return socket;
  };

  // Live events arrive in streams (every claim and mark of an item): run fn at most once
  // per ms, always after the latest event. (A debounce that restarts its timer on every
  // event would never fire while markers are busy.)
  MC.coalesce = function (fn, ms) {
    var t = null;
    return function () {
      if (t) { return; }
      t = setTimeout(function () { t = null; fn(); }, ms);
    };
  };
})();
