/* pixscribe report: overlay toggles, hover links between an entity's box, table row and
 * caption reference, and filters. Row text is only ever read with textContent and written
 * as textContent: nothing from a row becomes markup. */
(function () {
  "use strict";
  var ROWS = window.PIXSCRIBE_ROWS || [];
  var $ = function (sel, root) { return (root || document).querySelector(sel); };
  var $$ = function (sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); };

  /* ---- overlay toggles ---------------------------------------------------------- */
  document.addEventListener("change", function (ev) {
    var t = ev.target;
    if (t.matches("input[data-toggle]")) {
      var card = t.closest("article.row");
      $$("g.layer", card).forEach(function (g) {
        if (g.getAttribute("data-layer") === t.getAttribute("data-toggle")) g.classList.toggle("off", !t.checked);
      });
    } else if (t.id === "f-overlays") {
      $$("svg.ov").forEach(function (s) { s.classList.toggle("alloff", !t.checked); });
    } else if (t.matches("[data-flag], #f-error")) {
      applyFilters(true);
    }
  });

  /* ---- hover: highlight every element of one entity, show its label ------------- */
  var tip = $("#tip");
  function entOf(el) { var e = el && el.closest && el.closest("[data-ent]"); return e && e.getAttribute("data-ent") ? e : null; }
  function highlight(card, ids, on) {
    ids.forEach(function (id) {
      $$("[data-ent]", card).forEach(function (el) { if (el.getAttribute("data-ent") === id) el.classList.toggle("hl", on); });
    });
  }
  function refsOf(el) { var r = el.getAttribute("data-refs"); return r ? r.split(" ") : [el.getAttribute("data-ent")]; }
  document.addEventListener("mouseover", function (ev) {
    var el = entOf(ev.target);
    if (!el) return;
    var card = el.closest("article.row");
    highlight(card, refsOf(el), true);
    var title = null;
    $$("g.ent", card).forEach(function (g) {
      if (g.getAttribute("data-ent") === refsOf(el)[0]) { var t = g.querySelector("title"); if (t) title = t.textContent; }
    });
    if (title && tip) { tip.textContent = title; tip.hidden = false; }
  });
  document.addEventListener("mouseout", function (ev) {
    var el = entOf(ev.target);
    if (!el) return;
    highlight(el.closest("article.row"), refsOf(el), false);
    if (tip) tip.hidden = true;
  });
  document.addEventListener("mousemove", function (ev) {
    if (tip && !tip.hidden) { tip.style.left = (ev.clientX + 12) + "px"; tip.style.top = (ev.clientY + 12) + "px"; }
  });

  /* ---- filters ------------------------------------------------------------------- */
  var errSel = $("#f-error"), text = $("#f-text"), count = $("#f-count");

  function state() {
    var flags = $$("[data-flag]").filter(function (c) { return c.checked; }).map(function (c) { return c.getAttribute("data-flag"); });
    return { error: errSel ? errSel.value : "", flags: flags, q: text ? text.value.trim().toLowerCase() : "" };
  }
  function matches(r, s) {
    if (s.error === "-" && r.e) return false;
    if (s.error === "*" && !r.e) return false;
    if (s.error && s.error !== "-" && s.error !== "*" && r.e !== s.error) return false;
    for (var i = 0; i < s.flags.length; i++) if (r.f.indexOf(s.flags[i]) < 0) return false;
    if (s.q) {
      var words = s.q.split(/\s+/);
      for (var j = 0; j < words.length; j++) if (r.t.indexOf(words[j]) < 0) return false;
    }
    return true;
  }
  function saveHash(s) {
    var parts = [];
    if (s.error) parts.push("error=" + encodeURIComponent(s.error));
    if (s.flags.length) parts.push("flags=" + encodeURIComponent(s.flags.join(",")));
    if (s.q) parts.push("q=" + encodeURIComponent(s.q));
    var h = parts.length ? "#" + parts.join("&") : "";
    if (history.replaceState) history.replaceState(null, "", h || location.pathname);
    $$("a[data-page], a.pagelink").forEach(function (a) { a.setAttribute("href", a.getAttribute("href").split("#")[0] + h); });
  }
  function loadHash() {
    var h = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (kv) {
      var i = kv.indexOf("=");
      if (i <= 0) return;
      try { h[kv.slice(0, i)] = decodeURIComponent(kv.slice(i + 1)); } catch (e) { /* a malformed %-escape: ignored */ }
    });
    if (errSel && h.error !== undefined) {
      var ok = $$("option", errSel).some(function (o) { return o.value === h.error; });
      if (ok) errSel.value = h.error;
    }
    if (h.flags) h.flags.split(",").forEach(function (f) {
      $$("[data-flag]").forEach(function (c) { if (c.getAttribute("data-flag") === f) c.checked = true; });
    });
    if (text && h.q) text.value = h.q;
  }
  function applyFilters(save) {
    var s = state(), shown = 0, total = 0;
    $$("article.row").forEach(function (a) {
      var r = ROWS[+a.getAttribute("data-idx")];
      var ok = !r || matches(r, s);
      a.hidden = !ok;
      total += 1; shown += ok ? 1 : 0;
    });
    if (count) count.textContent = shown + " of " + total + " rows on this page";
    var per = {};
    ROWS.forEach(function (r) { if (matches(r, s)) per[r.p] = (per[r.p] || 0) + 1; });
    var filtering = s.error || s.flags.length || s.q;
    $$("[data-page-count]").forEach(function (el) {
      var n = per[el.getAttribute("data-page-count")] || 0;
      el.textContent = filtering ? " (" + n + ")" : "";
      var link = el.closest("a[data-page]");
      if (link) link.classList.toggle("nomatch", !!filtering && n === 0);
    });
    if (save) saveHash(s);
  }
  var timer = null;
  if (text) text.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(function () { applyFilters(true); }, 120); });
  loadHash();
  applyFilters(false);
  document.documentElement.setAttribute("data-ready", "1");
})();
