// workflowd's own script: times in the viewer's zone or in UTC (remembered), the viewer's zone
// for the runs filter, and <details> left open across live updates. No inline code: the page's
// Content-Security-Policy allows scripts from this origin's files only.
(function () {
  "use strict";
  var KEY = "workflowd.times";
  var open = new Set();

  function local() {
    try { return window.localStorage.getItem(KEY) === "local"; } catch (err) { return false; }
  }

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function show(el) {
    var at = new Date(el.getAttribute("datetime"));
    if (isNaN(at.getTime())) { return; }
    if (!el.dataset.utc) { el.dataset.utc = el.textContent; }
    if (!local()) { el.textContent = el.dataset.utc; return; }
    el.textContent = at.getFullYear() + "-" + pad(at.getMonth() + 1) + "-" + pad(at.getDate()) +
      " " + pad(at.getHours()) + ":" + pad(at.getMinutes()) + ":" + pad(at.getSeconds());
  }

  function zone() {
    return local() ? Intl.DateTimeFormat().resolvedOptions().timeZone : "UTC";
  }

  function apply(root) {
    root.querySelectorAll("time[datetime]").forEach(show);
    document.querySelectorAll("input.tz-field").forEach(function (f) { f.value = zone(); });
    var button = document.getElementById("tz-toggle");
    if (button) { button.textContent = "Times: " + (local() ? zone() : "UTC"); }
    open.forEach(function (id) {
      var d = document.getElementById(id);
      if (d) { d.open = true; }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var button = document.getElementById("tz-toggle");
    if (button) {
      button.addEventListener("click", function () {
        try { window.localStorage.setItem(KEY, local() ? "utc" : "local"); } catch (err) { return; }
        apply(document);
      });
    }
    document.addEventListener("toggle", function (ev) {
      var d = ev.target;
      if (d.tagName !== "DETAILS" || !d.id) { return; }
      if (d.open) { open.add(d.id); } else { open.delete(d.id); }
    }, true);
    document.body.addEventListener("htmx:afterSwap", function (ev) { apply(ev.target); });
    apply(document);
  });
})();
