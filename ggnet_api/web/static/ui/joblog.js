// A job page's live log: the job's events from the console's event stream, appended
// once each.  The stream gives every event its seq as id, so when the connection
// drops the browser's EventSource comes back with Last-Event-ID and the server goes
// on after it; the seq check below drops anything already shown all the same.
(function () {
  "use strict";
  var log = document.getElementById("job-log");
  if (!log || !window.EventSource || log.dataset.done === "true") {
    return;
  }
  var last = parseInt(log.dataset.after, 10) || 0;
  var source = new EventSource(log.dataset.stream + "?after=" + last);
  function text(ev) {
    if (ev.stdout) {
      return ev.stdout;
    }
    var out = ev.event + (ev.host ? " " + ev.host : "");
    return ev.task ? out + ": " + ev.task : out;
  }
  source.addEventListener("log", function (msg) {
    var ev = JSON.parse(msg.data);
    if (ev.seq <= last) {
      return;
    }
    last = ev.seq;
    var item = document.createElement("li");
    item.dataset.seq = String(ev.seq);
    item.textContent = text(ev);
    log.appendChild(item);
    log.scrollTop = log.scrollHeight;
  });
  source.addEventListener("end", function (msg) {
    source.close();
    var state = document.getElementById("job-state");
    if (state) {
      state.textContent = JSON.parse(msg.data).state;
    }
    log.dataset.done = "true";
    ["cancel-form", "live-hint"].forEach(function (id) {
      var gone = document.getElementById(id);
      if (gone) {
        gone.remove();
      }
    });
  });
})();
