// kubeci's pages work without this script; with it:
// - times ("3 min ago") stay current;
// - a build page's log can be searched, and a linked line (#L42) is shown (each line's
//   time shows with "show times", a checkbox the stylesheet alone acts on);
// - a running build's page follows it live: log lines arrive over Server-Sent Events,
//   already rendered as escaped HTML by the server, numbered and split into steps here;
//   "follow" keeps the newest line in view; at its end the state, reason, times and
//   actions become the finished build's ("Cancel" gives way to "Rebuild") without a reload.
(function () {
  var byId = function (id) { return document.getElementById(id); };

  function ago(then) {
    var seconds = Math.round((Date.now() - then) / 1000);
    var future = seconds < 0, n = Math.abs(seconds), said;
    if (n < 5) return "just now";
    if (n < 60) said = n + " s";
    else if (n < 3600) said = Math.floor(n / 60) + " min";
    else if (n < 86400) said = Math.floor(n / 3600) + " h";
    else if (n < 172800) said = "1 day";
    else said = Math.floor(n / 86400) + " days";
    return future ? "in " + said : said + " ago";
  }
  function refreshTimes() {
    var times = document.querySelectorAll("time[datetime]:not(.ts)");
    for (var i = 0; i < times.length; i++) {
      var at = Date.parse(times[i].getAttribute("datetime"));
      if (!isNaN(at)) times[i].textContent = ago(at);
    }
  }
  setInterval(refreshTimes, 30000);

  // Search within the log: matching lines are marked, Enter goes to the next one.
  var search = byId("log-search");
  var hits = byId("log-hits");
  var box = byId("log-box");
  var at = -1;
  function mark() {
    var wanted = search.value.toLowerCase();
    var lines = box.querySelectorAll("li");
    var found = 0;
    for (var i = 0; i < lines.length; i++) {
      var hit = wanted !== "" && lines[i].lastChild.textContent.toLowerCase().indexOf(wanted) >= 0;
      lines[i].classList.toggle("hit", hit);
      if (hit) found++;
    }
    hits.textContent = wanted === "" ? "" : found + (found === 1 ? " line matches" : " lines match");
    at = -1;
  }
  if (search && box) {
    search.hidden = false;
    search.addEventListener("input", mark);
    search.addEventListener("keydown", function (e) {
      if (e.key !== "Enter") return;
      e.preventDefault();
      var marked = box.querySelectorAll("li.hit");
      if (!marked.length) return;
      at = (at + 1) % marked.length;
      var details = marked[at].closest("details");
      if (details) details.open = true;
      marked[at].scrollIntoView({ block: "center" });
    });
  }
  // A linked line inside a folded step: open the step.
  function openTarget() {
    var target = location.hash && document.getElementById(location.hash.slice(1));
    var details = target && target.closest && target.closest("details");
    if (details) { details.open = true; target.scrollIntoView({ block: "center" }); }
  }
  window.addEventListener("hashchange", openTarget);
  openTarget();

  var log = byId("log");
  if (!log || !log.dataset.events || !window.EventSource) return;
  var follow = byId("follow");
  var status = byId("live");
  var state = byId("state");
  var duration = byId("duration");
  var events = new EventSource(log.dataset.events);
  var first = true;
  var number = 0;
  var startedEl = byId("started") && byId("started").querySelector("time");
  var started = startedEl ? Date.parse(startedEl.getAttribute("datetime")) : NaN;
  var icons = { queued: "\u25cb", pending: "\u25d4", running: "\u25cf", succeeded: "\u2713",
    failed: "\u2717", error: "!", aborted: "\u2298" };

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
    state.className = "st st-" + name;
    state.innerHTML = "";
    var icon = document.createElement("span");
    icon.className = "ic";
    icon.setAttribute("aria-hidden", "true");
    icon.textContent = icons[name] || "\u2013";
    var word = document.createElement("span");
    word.className = "word";
    word.textContent = name;
    state.appendChild(icon);
    state.appendChild(document.createTextNode(" "));
    state.appendChild(word);
  }
  function setTime(id, value) {
    var el = byId(id);
    if (!el) return;
    el.textContent = "";
    if (!value) { el.textContent = "\u2013"; return; }
    var time = document.createElement("time");
    time.setAttribute("datetime", value);
    time.title = value;
    time.textContent = ago(Date.parse(value));
    el.appendChild(time);
  }
  function setText(id, value) {
    var el = byId(id);
    if (el) el.textContent = value || "\u2013";
  }
  // A new step of the log, folding the one before.
  function newStep(name) {
    var open = box.querySelectorAll("details");
    for (var i = 0; i < open.length; i++) open[i].open = false;
    var details = document.createElement("details");
    details.open = true;
    details.dataset.step = name;
    var summary = document.createElement("summary");
    summary.textContent = name;
    var list = document.createElement("ol");
    list.start = number + 1;
    // The newest step's list is the one called "log".
    var before = byId("log");
    if (before) before.removeAttribute("id");
    list.id = "log";
    details.appendChild(summary);
    details.appendChild(list);
    box.insertBefore(details, byId("log-end"));
    log = list;
  }

  events.onmessage = function (e) {
    if (first) {
      var old = box.querySelectorAll("details");
      for (var i = 0; i < old.length; i++) old[i].remove();
      first = false;
      // Lines come only from a build step that runs.
      if (state && /^(queued|pending)$/.test(state.className.replace("st st-", ""))) setState("running");
      if (isNaN(started)) started = Date.now();
    }
    var line = document.createElement("li");
    number++;
    line.id = "L" + number;
    var anchor = document.createElement("a");
    anchor.href = "#L" + number;
    anchor.setAttribute("aria-label", "line " + number);
    anchor.textContent = number;
    // The line's time, then its HTML.
    var cut = e.data.indexOf("\n");
    var stamp = cut < 0 ? "" : e.data.slice(0, cut);
    var text = document.createElement("span");
    text.innerHTML = cut < 0 ? e.data : e.data.slice(cut + 1);
    var step = /^==> (\S+): (init container|container) started/.exec(text.textContent);
    if (step) newStep(step[1]);
    else if (!box.querySelector("details")) newStep("build");
    line.appendChild(anchor);
    var when = new Date(stamp);
    if (stamp && !isNaN(when)) {
      var time = document.createElement("time");
      time.className = "ts";
      time.setAttribute("datetime", stamp);
      time.title = stamp;
      time.textContent = when.toISOString().slice(11, 23);
      line.appendChild(time);
    }
    line.appendChild(text);
    log.appendChild(line);
    if (search && search.value) mark();
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
    if ((end.state === "failed" || end.state === "error") && !byId("reason")) {
      var reason = document.createElement("p");
      reason.className = "problem";
      reason.id = "reason";
      reason.setAttribute("role", "alert");
      var title = document.createElement("b");
      title.textContent = end.state === "failed" ? "Why it failed: " : "Why it stopped: ";
      reason.appendChild(title);
      reason.appendChild(document.createTextNode(end.message || "no reason was given"));
      var line = byId("state-line");
      line.parentNode.insertBefore(reason, line);
    }
    if (end.started_at) setTime("started", end.started_at);
    setTime("finished", end.finished_at);
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
