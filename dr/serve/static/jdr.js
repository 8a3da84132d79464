// jdr serve: dates in the browser's time zone, the admin's user picker, restore progress.
// Loaded from the service itself (CSP script-src 'self'); no inline script anywhere.
"use strict";
(function () {
  function localTimes() {
    document.querySelectorAll("time[data-epoch]").forEach(function (el) {
      var d = new Date(Number(el.getAttribute("data-epoch")) * 1000);
      el.title = el.textContent;
      el.textContent = d.toLocaleString();
    });
    document.querySelectorAll("time[datetime]:not([data-epoch])").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (!isNaN(d)) { el.title = el.textContent; el.textContent = d.toLocaleString(); }
    });
  }

  function picker() {
    var sel = document.getElementById("pick-user");
    var go = document.getElementById("pick-go");
    if (!sel || !go) return;
    go.addEventListener("click", function () {
      window.location.href = sel.getAttribute("data-prefix") + "u/" + sel.value + "/";
    });
  }

  function fmt(n) {
    var units = ["B", "KiB", "MiB", "GiB"], i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + " " + units[i];
  }

  // JupyterHub's XSRF check applies to script requests (Sec-Fetch-Mode: cors), GETs included: without the
  // token the poll is refused (403, then an OAuth redirect loop) and the page never sees the restore end.
  // Send the service's _xsrf cookie as JupyterLab does.
  function xsrfToken() {
    var m = document.cookie.match(/(?:^|;\s*)_xsrf=([^;]*)/);
    return m ? decodeURIComponent(m[1]) : "";
  }

  function watchJob() {
    var box = document.getElementById("job");
    if (!box || box.getAttribute("data-state") !== "running") return;
    var url = box.getAttribute("data-url");
    var bar = document.getElementById("job-progress");
    var status = document.getElementById("job-status");
    var notice = document.getElementById("notice");
    function poll() {
      fetch(url, {credentials: "same-origin", headers: {"X-XSRFToken": xsrfToken()}}).then(function (r) { return r.json(); }).then(function (j) {
        bar.max = Math.max(j.total_bytes, 1);
        bar.value = j.bytes;
        box.setAttribute("data-state", j.state);
        if (j.state === "running") {
          status.textContent = "Restoring… " + j.files + " file(s), " + fmt(j.bytes);
          setTimeout(poll, 500);
          return;
        }
        if (j.state === "done") {
          status.textContent = "Done: " + j.files + " file(s) in " + j.target +
            (j.previous ? "; your previous version is kept as " + j.previous : "") + ".";
          notice.textContent = "Your restore of " + j.path + " is complete.";
          notice.className = "notice ok";
        } else {
          status.textContent = "Failed: " + j.error;
          notice.textContent = "Your restore of " + j.path + " failed.";
          notice.className = "notice failed";
        }
        notice.hidden = false;
      }).catch(function () { setTimeout(poll, 2000); });
    }
    poll();
  }

  document.addEventListener("DOMContentLoaded", function () {
    localTimes();
    picker();
    watchJob();
  });
})();
