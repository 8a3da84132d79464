// jdr serve: dates in the browser's time zone, the admin's user picker, restore and download progress.
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

  // Downloads with a progress bar in the page: the response (whose Content-Length the service always sends:
  // a file's size, or a folder zip's exact size) is read as a stream, the bar follows the bytes, then the
  // bytes are handed to the browser as a blob to save. Nothing here needs more than CSP's default-src 'self'
  // (fetch to the service, a blob: link clicked). Bigger downloads than BLOB_LIMIT are not held in the
  // page: the link goes to the browser's own download manager, which shows progress from Content-Length.
  var BLOB_LIMIT = 1024 * 1024 * 1024;

  function downloads() {
    var box = document.getElementById("download-progress");
    if (!box || !window.fetch || !window.ReadableStream || !window.Blob) return;
    var bar = box.querySelector("progress"), pct = box.querySelector(".pct"), what = box.querySelector(".what");
    var busy = false;
    function show(got, total) {
      bar.max = Math.max(total, 1);
      bar.value = Math.min(got, bar.max);
      pct.textContent = total ? Math.floor(got * 100 / total) + " %" : fmt(got);
    }
    function failed(name, why) {
      what.textContent = "Download of " + name + " failed: " + why;
      box.className = "download-progress failed";
    }
    document.querySelectorAll("a[data-download]").forEach(function (a) {
      a.addEventListener("click", function (ev) {
        if (busy || Number(a.getAttribute("data-bytes") || 0) > BLOB_LIMIT) return;
        ev.preventDefault();
        busy = true;
        var name = a.getAttribute("data-name") || "download";
        box.hidden = false;
        box.className = "download-progress running";
        what.textContent = "Downloading " + name + "…";
        show(0, 1);
        fetch(a.href, {credentials: "same-origin", headers: {"X-XSRFToken": xsrfToken()}}).then(function (r) {
          if (!r.ok) {  // the service's error page says why (size or rate limit): show its message
            return r.text().then(function (html) {
              var msg = new DOMParser().parseFromString(html, "text/html").querySelector(".message");
              failed(name, msg ? msg.textContent : "HTTP " + r.status);
            });
          }
          var total = Number(r.headers.get("Content-Length") || 0), got = 0, parts = [];
          var reader = r.body.getReader();
          function pump() {
            return reader.read().then(function (x) {
              if (x.done) return;
              parts.push(x.value);
              got += x.value.length;
              show(got, total);
              return pump();
            });
          }
          return pump().then(function () {
            if (total && got !== total) throw new Error("the download was cut short");
            var url = URL.createObjectURL(new Blob(parts, {type: r.headers.get("Content-Type") || ""}));
            var save = document.createElement("a");
            save.href = url;
            save.download = name;
            document.body.appendChild(save);
            save.click();
            save.remove();
            setTimeout(function () { URL.revokeObjectURL(url); }, 60000);
            what.textContent = "Downloaded " + name + " (" + fmt(got) + ").";
            box.className = "download-progress ok";
          });
        }).catch(function (e) { failed(name, e.message || "the connection failed"); })
          .then(function () { busy = false; });
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    localTimes();
    picker();
    watchJob();
    downloads();
  });
})();
