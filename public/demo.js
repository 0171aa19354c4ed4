// Shared by the demo pages: halley.js options from the query string (so tests and curious
// readers can force a transport: ?transports=sse,poll&probeDelay=2000) and a status badge.
(function () {
  "use strict";
  var NUMBERS = ["wsTimeout", "streamTimeout", "pollTimeout", "probeDelay", "probeMaxDelay", "backoffBase",
    "backoffMax", "transportTTL", "ackInterval", "activityTimeout", "pongTimeout", "confirmTimeout"];
  var q = new URLSearchParams(location.search);

  window.demoOptions = function (extra) {
    var o = {};
    NUMBERS.forEach(function (k) { if (q.has(k)) o[k] = Number(q.get(k)); });
    if (q.has("transports")) o.transports = q.get("transports").split(",");
    if (q.has("binaryType")) o.binaryType = q.get("binaryType");
    if (q.has("remember")) o.rememberTransport = q.get("remember") !== "0";
    if (q.has("share")) o.shareConnection = q.get("share") !== "0";
    if (q.has("host")) o.host = q.get("host");
    for (var k in extra || {}) o[k] = extra[k];
    return o;
  };
  window.demoParam = function (name, fallback) { return q.has(name) ? q.get(name) : fallback; };

  /** Keeps an element showing the connection's state and transport. */
  window.demoBadge = function (client, el) {
    function show() {
      var c = client.connection;
      el.innerHTML = "";
      var s = document.createElement("span");
      s.className = "badge " + c.state;
      s.textContent = c.state;
      el.appendChild(s);
      if (c.transport && c.state === "connected") {
        var t = document.createElement("span");
        t.className = "badge " + c.transport;
        t.textContent = { ws: "WebSocket", sse: "SSE streaming", poll: "long-polling" }[c.transport];
        el.appendChild(document.createTextNode(" "));
        el.appendChild(t);
      }
    }
    client.connection.bind("state_change", show);
    client.connection.bind("transport", show);
    show();
  };

  window.hex = function (buf) {
    return Array.prototype.map.call(new Uint8Array(buf), function (b) { return (b < 16 ? "0" : "") + b.toString(16); }).join(" ");
  };
  window.escapeHTML = function (s) {
    return String(s).replace(/[&<>"']/g, function (c) { return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]; });
  };
})();
