// kcap live transcript: appends lines as the server streams them (server-sent events).
// Progressive enhancement: without this script the page is complete as served; reload shows
// new lines. The server renders every fragment (escaped and sanitized) and this script only
// inserts it: no transcript text is ever turned into markup here.
(function () {
  "use strict";
  var root = document.querySelector("[data-live]");
  var list = document.getElementById("lines");
  if (!root || !list || !window.EventSource) {
    return;
  }
  var status = document.getElementById("live-status");
  var say = function (text) {
    if (status) {
      status.textContent = text;
    }
  };
  var source = new EventSource(root.getAttribute("data-live"));
  source.addEventListener("open", function () {
    say("live: new lines appear as they arrive");
  });
  source.addEventListener("line", function (event) {
    var n = event.lastEventId;
    if (n && document.getElementById("L" + n)) {
      return;
    }
    var template = document.createElement("template");
    template.innerHTML = event.data;
    list.appendChild(template.content);
    var count = document.getElementById("line-count");
    if (count) {
      count.textContent = String(list.children.length);
    }
  });
  source.addEventListener("end", function () {
    say("the session has ended");
    source.close();
  });
  source.addEventListener("error", function () {
    say("connection lost, retrying…");
  });
})();
