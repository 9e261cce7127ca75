// Live log of a build page: lines arrive over Server-Sent Events, already rendered as
// escaped HTML by the server; "follow" keeps the newest line in view.
(function () {
  var log = document.getElementById("log");
  if (!log || !log.dataset.events || !window.EventSource) return;
  var follow = document.getElementById("follow");
  var status = document.getElementById("live");
  var events = new EventSource(log.dataset.events);
  var first = true;
  var state = document.getElementById("state");
  events.onmessage = function (e) {
    if (first) {
      log.innerHTML = "";
      first = false;
      // Lines come only from a build step that runs.
      if (state && /^(queued|pending)$/.test(state.textContent)) {
        state.textContent = "running"; state.className = "state running";
      }
    }
    log.insertAdjacentHTML("beforeend", e.data + "\n");
    if (follow && follow.checked) window.scrollTo(0, document.body.scrollHeight);
  };
  events.addEventListener("end", function (e) {
    events.close();
    if (status) status.textContent = "finished: " + e.data;
    if (state) { state.textContent = e.data; state.className = "state " + e.data; }
  });
  events.onerror = function () { if (status) status.textContent = "disconnected; reload to resume"; };
})();
