// A live run's page fetches its timeline fragment every few seconds and swaps it in; when the
// run has finished, the page reloads once so its fields and steps table show the end state.
(function () {
  "use strict";
  function start() {
    var frame = document.getElementById("run-timeline-frame");
    if (!frame) { return; }
    var seconds = Number(frame.dataset.seconds) || 3;
    function isLive() {
      var timeline = document.getElementById("run-timeline");
      return timeline !== null && timeline.dataset.live === "1";
    }
    function refresh() {
      fetch(frame.dataset.url, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (response) {
          if (!response.ok) { throw new Error("timeline: HTTP " + response.status); }
          return response.text();
        })
        .then(function (html) {
          frame.innerHTML = html;
          if (isLive()) { window.setTimeout(refresh, seconds * 1000); } else { window.location.reload(); }
        })
        .catch(function () { window.setTimeout(refresh, seconds * 1000); });
    }
    if (isLive()) { window.setTimeout(refresh, seconds * 1000); }
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
}());
