// Meridian console: keeps the parts of a page marked `data-live` current without a reload.
// Every few seconds it asks the server for the same page again and replaces each marked
// element's content with the fresh copy of the element of the same id; forms sit outside
// those parts, so nothing an operator types is lost. Served as /static/live.js (the
// console's only script: `script-src 'self'`).
(function () {
  "use strict";
  var EVERY_MS = 3000;
  function marked() {
    return document.querySelectorAll("[data-live][id]");
  }
  if (marked().length === 0) {
    return;
  }
  function refresh() {
    fetch(location.href, { credentials: "same-origin", headers: { "X-Meridian-Live": "1" } })
      .then(function (r) {
        if (!r.ok || r.redirected) {
          throw new Error("status " + r.status);
        }
        return r.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        marked().forEach(function (el) {
          var now = fresh.getElementById(el.id);
          if (now && now.innerHTML !== el.innerHTML) {
            el.innerHTML = now.innerHTML;
          }
        });
        document.body.setAttribute("data-refreshed", String(Date.now()));
        document.body.removeAttribute("data-stale");
      })
      .catch(function () {
        document.body.setAttribute("data-stale", "yes");
      })
      .then(function () {
        setTimeout(refresh, EVERY_MS);
      });
  }
  setTimeout(refresh, EVERY_MS);
})();
