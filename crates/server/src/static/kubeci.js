// Live build page: log lines arrive over Server-Sent Events, already rendered as escaped
// HTML by the server; "follow" keeps the newest line in view. While the build runs its
// duration counts up; at its end the state, times and actions become the finished
// build's ("Cancel" gives way to "Rebuild") without a reload.
(function () {
  var log = document.getElementById("log");
  if (!log || !log.dataset.events || !window.EventSource) return;
  var byId = function (id) { return document.getElementById(id); };
  var follow = byId("follow");
  var status = byId("live");
  var state = byId("state");
  var duration = byId("duration");
  var events = new EventSource(log.dataset.events);
  var first = true;
  var started = Date.parse((byId("started") || {}).textContent || "");

  function format(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    if (seconds < 60) return seconds + "s";
    if (seconds < 3600) return Math.floor(seconds / 60) + "m " + pad(seconds % 60) + "s";
    return Math.floor(seconds / 3600) + "h " + pad(Math.floor(seconds % 3600 / 60)) + "m";
  }
  var ticker = setInterval(function () {
    if (duration && !isNaN(started)) duration.textContent = format((Date.now() - started) / 1000);
  }, 1000);

  function setState(name) {
    if (!state) return;
    state.textContent = name;
    state.className = "state " + name;
  }
  function setText(id, value) {
    var el = byId(id);
    if (el) el.textContent = value || "\u2013";
  }

  events.onmessage = function (e) {
    if (first) {
      log.innerHTML = "";
      first = false;
      // Lines come only from a build step that runs.
      if (state && /^(queued|pending)$/.test(state.textContent)) setState("running");
      if (isNaN(started)) started = Date.now();
    }
    log.insertAdjacentHTML("beforeend", e.data + "\n");
    if (follow && follow.checked) window.scrollTo(0, document.body.scrollHeight);
  };
  events.addEventListener("end", function (e) {
    events.close();
    clearInterval(ticker);
    var end;
    try { end = JSON.parse(e.data); } catch (_) { end = { state: e.data }; }
    if (status) status.textContent = "finished: " + end.state;
    setState(end.state);
    var message = byId("message");
    if (message) message.textContent = end.message ? ": " + end.message : "";
    if (end.started_at) setText("started", end.started_at);
    setText("finished", end.finished_at);
    setText("duration", end.duration);
    var commit = byId("commit");
    if (commit && end.commit && commit.textContent === "\u2013") commit.textContent = end.commit.slice(0, 12);
    var cancel = byId("cancel");
    if (cancel) cancel.remove();
    var rebuild = byId("rebuild");
    if (rebuild) rebuild.hidden = false;
  });
  events.onerror = function () { if (status) status.textContent = "disconnected; reload to resume"; };
})();
