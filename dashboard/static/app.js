// cronring dashboard: live updates from the cluster-wide stream. Plain JavaScript, no build step.
// Everything inserted from events uses textContent; row HTML comes from the server (autoescaped).
(function () {
  function csrfToken() {
    var m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.content : "";
  }
  "use strict";
  var CHIP = { waiting: "Waiting", running: "Running", paused: "Paused", failing: "Failing", unknown: "Unknown" };
  var STATE_OF = { claimed: "running", running: "running", succeeded: "waiting", failed: "failing", timed_out: "failing" };
  var live = document.getElementById("live");
  var es = null;

  function setChip(root, state) {
    var chip = root.querySelector('[data-role="chip"]');
    if (!chip) return;
    chip.className = "chip " + state;
    chip.textContent = CHIP[state] || "Unknown";
  }

  function setLastRun(root, ev) {
    var cell = root.querySelector('[data-role="lastrun"]');
    if (!cell) return;
    cell.textContent = "";
    var code = document.createElement("span");
    var status = ev.status_code;
    code.className = "code c" + (status ? Math.floor(status / 100) : 0);
    code.textContent = status != null ? String(status) : ev.state;
    var late = document.createElement("span");
    late.className = "muted";
    late.textContent = " " + (ev.lateness_ms != null ? ev.lateness_ms : "–") + " ms late";
    var when = document.createElement("span");
    when.className = "muted small";
    when.textContent = (ev.at || "").replace("T", " ").replace(/\.\d+Z$/, " UTC");
    cell.appendChild(code); cell.appendChild(late); cell.appendChild(document.createElement("br")); cell.appendChild(when);
    var owner = root.querySelector('[data-role="owner"]');
    if (owner && ev.node) owner.textContent = ev.node;
  }

  // A row's tick strip: an instant's execution event sets its tick's fate, or adds it at the end (the oldest goes).
  var FATE_OF = { succeeded: "delivered", failed: "failed", timed_out: "failed", abandoned: "abandoned",
                  cancelled: "cancelled", skipped: "skipped", missed: "missed", excluded: "excluded",
                  buffered: "buffered", claimed: "running", running: "running" };
  function updateStrip(root, ev) {
    var strip = root.querySelector('[data-role="strip"]');
    var fate = FATE_OF[ev.state];
    if (!strip || !fate || (ev.kind !== "tick" && ev.kind !== "catchup")) return;
    var tick = strip.querySelector('[data-at="' + CSS.escape(ev.scheduled_at) + '"]');
    if (!tick) {
      var ticks = strip.querySelectorAll(".tick");
      if (ticks.length && ticks[ticks.length - 1].getAttribute("data-at") > ev.scheduled_at) return;  // older
      var none = strip.querySelector(".muted"); if (none) none.remove();
      tick = document.createElement("span");
      tick.setAttribute("data-at", ev.scheduled_at);
      strip.appendChild(tick);
      var max = Number(strip.getAttribute("data-max")) || 20;
      while (strip.querySelectorAll(".tick").length > max) strip.removeChild(strip.querySelector(".tick"));
    }
    tick.className = "tick " + fate;
    tick.title = ev.scheduled_at.replace("T", " ").replace(/\.\d+Z$/, " UTC") + " · " + fate +
      (ev.status_code != null ? ": status " + ev.status_code : "") + (ev.error ? ": " + ev.error : "");
    var counts = {};
    strip.querySelectorAll(".tick").forEach(function (t) { var f = t.className.split(" ")[1]; counts[f] = (counts[f] || 0) + 1; });
    strip.setAttribute("aria-label", "last " + strip.querySelectorAll(".tick").length + " ticks: " +
      Object.keys(counts).map(function (f) { return counts[f] + " " + f; }).join(", "));
  }

  function onExecution(ev) {
    var roots = document.querySelectorAll('[data-job="' + CSS.escape(ev.job_id) + '"]');
    roots.forEach(function (root) {
      updateStrip(root, ev);
      if (root.getAttribute("data-paused") === "true") return;
      var state = STATE_OF[ev.state];
      if (state) setChip(root, state);
      if (ev.state === "succeeded" || ev.state === "failed" || ev.state === "timed_out") setLastRun(root, ev);
    });
    var hist = document.getElementById("history");
    if (hist && hist.getAttribute("data-job") === ev.job_id && ev.state !== "running" && ev.state !== "claimed") {
      refreshHistory(hist);
    }
  }

  // The job page's history: when an execution ends, the server's own rows are fetched again (at most once a
  // second) and swapped in, so a row that arrives live looks exactly like the rows the page came with.
  var historyTimer = null;
  function refreshHistory(hist) {
    if (historyTimer) return;
    historyTimer = setTimeout(function () {
      historyTimer = null;
      fetch("/jobs/" + encodeURIComponent(hist.getAttribute("data-job")) + "/history", { credentials: "same-origin" })
        .then(function (r) { return r.ok && !r.redirected ? r.text() : null; })  // (a lapsed login: no swap)
        .then(function (html) {
          if (html === null) return;
          var open = {};  // a response excerpt the reader opened stays open
          hist.querySelectorAll("tr[data-exec] details[open]").forEach(function (d) { open[d.closest("tr").getAttribute("data-exec")] = true; });
          var tpl = document.createElement("template");
          tpl.innerHTML = "<table><tbody>" + html + "</tbody></table>";
          var body = hist.querySelector("tbody");
          body.replaceWith(tpl.content.querySelector("tbody"));
          Object.keys(open).forEach(function (id) {
            var d = hist.querySelector('tr[data-exec="' + CSS.escape(id) + '"] details'); if (d) d.open = true;
          });
        }).catch(function () {});
    }, 1000);
  }

  function refreshRow(id, insert) {
    var table = document.getElementById("jobs");
    if (!table) return;
    fetch("/jobs/" + encodeURIComponent(id) + "/row", { credentials: "same-origin" }).then(function (r) {
      if (!r.ok || r.redirected) return null;
      return r.text();
    }).then(function (html) {
      if (!html) return;
      var tpl = document.createElement("template");
      tpl.innerHTML = html.trim();
      var row = tpl.content.firstElementChild;
      var old = table.querySelector('tr[data-job="' + CSS.escape(id) + '"]');
      if (old) old.replaceWith(row);
      else if (insert) {
        var body = table.querySelector("tbody");
        var empty = body.querySelector(".empty"); if (empty) empty.remove();
        body.insertBefore(row, body.firstChild);
      }
    });
  }

  // Times: the server writes them in UTC inside <time datetime=…> (with data-zone, the job's zone); shown in the
  // zone the reader chose in the header (UTC, theirs, or each job's), remembered in this browser.
  var tzSelect = document.getElementById("tz");
  var tzMode = "local";  // (the reader's own zone until they choose)
  try { tzMode = localStorage.getItem("cronring.tz") || "local"; } catch (e) { /* storage off: their zone */ }
  if (tzSelect) {
    tzSelect.value = tzMode;
    var local = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (local) tzSelect.querySelector('option[value="local"]').textContent = "your zone (" + local + ")";
    tzSelect.addEventListener("change", function () {
      tzMode = tzSelect.value;
      try { localStorage.setItem("cronring.tz", tzMode); } catch (e) { /* not kept */ }
      formatTimes(document);
    });
  }
  var formats = {};
  function formatTime(el) {
    var iso = el.getAttribute("datetime");
    var d = new Date(iso);
    if (!iso || isNaN(d)) return;
    var zone = tzMode === "utc" ? "UTC" : tzMode === "job" ? (el.getAttribute("data-zone") || "UTC") : undefined;
    var key = zone || "";
    try {
      if (!formats[key]) formats[key] = new Intl.DateTimeFormat("sv-SE", { timeZone: zone, year: "numeric", month: "2-digit",
        day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short" });
      el.textContent = formats[key].format(d);
    } catch (e) { /* an unknown zone: left in UTC */ }
  }
  function formatTimes(root) { root.querySelectorAll("time[datetime]").forEach(formatTime); }
  if (tzMode !== "utc") formatTimes(document);
  if (window.MutationObserver) new MutationObserver(function (changes) {
    if (tzMode === "utc") return;
    changes.forEach(function (c) {
      c.addedNodes.forEach(function (n) { if (n.nodeType === 1) { if (n.matches("time[datetime]")) formatTime(n); else formatTimes(n); } });
    });
  }).observe(document.body, { childList: true, subtree: true });

  // "Next run" cells carry their next fire times (data-upcoming): advance through them each
  // second; when they run out, ask for the row again (at most 5 rows a second, each at most
  // every 10 s), so a page of every-second jobs stays right without a request per tick.
  var askedAt = {};
  function advanceNextRuns() {
    var now = Date.now(), budget = 5;
    document.querySelectorAll('[data-role="nextrun"][data-upcoming]').forEach(function (cell) {
      var times = cell.getAttribute("data-upcoming").split(" ").filter(Boolean);
      var i = 0;
      while (i < times.length && Date.parse(times[i]) <= now) i++;
      if (i > 0) {
        times = times.slice(i);
        cell.setAttribute("data-upcoming", times.join(" "));
        var shown = cell.querySelector("time");
        if (times.length && shown) { shown.setAttribute("datetime", times[0]); shown.textContent = times[0].replace("T", " ").replace(/\.\d+Z$/, " UTC"); if (tzMode !== "utc") formatTime(shown); }
        else if (times.length) cell.textContent = times[0].replace("T", " ").replace(/\.\d+Z$/, " UTC");
      }
      if (times.length) return;
      var row = cell.closest("tr[data-job]");
      var id = row && row.getAttribute("data-job");
      if (!id || budget <= 0 || now - (askedAt[id] || 0) < 10000) return;
      budget--; askedAt[id] = now;
      refreshRow(id, false);
    });
  }
  if (document.getElementById("jobs")) setInterval(advanceNextRuns, 1000);

  // The forecast page: a job created, edited, paused or deleted changes the forecast; the page asks the server
  // for itself again (at most every 3 s) and swaps its main part in: the heatmap is the server's SVG, drawn once.
  var forecastTimer = null;
  function refreshForecast() {
    if (!document.getElementById("heatmap") || forecastTimer) return;
    forecastTimer = setTimeout(function () {
      forecastTimer = null;
      fetch(location.href, { credentials: "same-origin" }).then(function (r) { return r.ok && !r.redirected ? r.text() : null; })
        .then(function (html) {
          if (!html) return;
          var doc = new DOMParser().parseFromString(html, "text/html");
          var fresh = doc.querySelector("main"), main = document.querySelector("main");
          if (fresh && main) { main.replaceWith(fresh); }
        }).catch(function () {});
    }, 3000);
  }

  function onJob(ev) {
    refreshForecast();
    var table = document.getElementById("jobs");
    if (ev.op === "deleted") {
      document.querySelectorAll('tr[data-job="' + CSS.escape(ev.id) + '"]').forEach(function (r) { r.remove(); });
      return;
    }
    if (table) refreshRow(ev.id, ev.op === "created" && table.getAttribute("data-first-page") === "true");
    logEvent("job " + ev.op + ": " + (ev.name || ev.id) + " (from " + ev.origin + ")");
  }

  // A backfill's progress bar on its job's page, from the stream (one event a second while it runs).
  function onBackfill(b) {
    if (!b) return;
    logEvent("backfill " + b.id + " of " + b.jobId + ": " + (b.sent + b.alreadyDone) + "/" + b.total + " " + b.state);
    var table = document.getElementById("backfills");
    if (!table || table.getAttribute("data-job") !== b.jobId) return;
    var tr = table.querySelector('tr[data-backfill="' + CSS.escape(b.id) + '"]');
    if (!tr) { location.reload(); return; }  // one started elsewhere: the server renders it
    var bar = tr.querySelector("progress");
    if (bar) { bar.max = b.total || 1; bar.value = b.sent + b.alreadyDone; }
    var set = function (role, text) { var el = tr.querySelector('[data-role="' + role + '"]'); if (el) el.textContent = text; };
    set("pct", Math.round(b.progress * 100) + "%");
    set("sent", String(b.sent)); set("done", String(b.alreadyDone)); set("failed", String(b.failed));
    var st = tr.querySelector('[data-role="state"] span');
    if (st) { st.className = "st " + b.state; st.textContent = b.state; }
    if (b.state === "done" || b.state === "cancelled") { var f = tr.querySelector("form"); if (f) f.remove(); }
  }

  function logEvent(text) {
    var log = document.getElementById("events");
    if (!log) return;
    var first = log.querySelector(".muted"); if (first && log.children.length === 1) first.remove();
    var li = document.createElement("li");
    li.textContent = new Date().toISOString().substr(11, 8) + "  " + text;
    log.insertBefore(li, log.firstChild);
    while (log.children.length > 200) log.removeChild(log.lastChild);
  }

  function onNode(ev) {
    var d = ev.detail || {};
    if (ev.op === "handover" || ev.op === "join" || ev.op === "leave" || ev.op === "lapsed") refreshCharts();
    if (ev.op === "handover") logEvent(ev.node_id + " hand-over " + d.direction + ": " + d.jobs + " job(s) at epoch " + ev.epoch);
    else logEvent("node " + ev.node_id + " " + ev.op + " (epoch " + ev.epoch + ")");
    var epoch = document.getElementById("epoch");
    if (epoch && ev.epoch) epoch.textContent = String(ev.epoch);
  }

  function setLive(ok, text) {
    if (!live) return;
    live.className = "live " + (ok ? "on" : "off");
    live.textContent = text;
    if (!ok) document.querySelectorAll('[data-role="chip"]').forEach(function (c) {
      if (!c.classList.contains("paused")) { c.className = "chip unknown"; c.textContent = CHIP.unknown; }
    });
  }

  // The cluster page's charts: every node reports its last 10 s; the server's charts are fetched again a moment
  // after the reports of a slot arrive (one fetch for all the nodes' reports) and swapped in.
  var chartsTimer = null;
  function refreshCharts() {
    var charts = document.getElementById("charts");
    if (!charts || chartsTimer) return;
    chartsTimer = setTimeout(function () {
      chartsTimer = null;
      fetch("/cluster/charts", { credentials: "same-origin" }).then(function (r) { return r.ok && !r.redirected ? r.text() : null; })
        .then(function (html) {
          if (!html) return;
          var tpl = document.createElement("template");
          tpl.innerHTML = html.trim();
          var fresh = tpl.content.getElementById("charts");
          var now = document.getElementById("charts");
          if (fresh && now) now.replaceWith(fresh);
        }).catch(function () {});
    }, 1500);
  }

  function connect() {
    if (!window.EventSource) return;
    es = new EventSource("/api/crons/status/stream");
    es.onopen = function () { setLive(true, "live"); };
    es.onerror = function () { setLive(false, "live: reconnecting"); };
    es.addEventListener("executions", function (e) { JSON.parse(e.data).forEach(onExecution); });
    es.addEventListener("job", function (e) { onJob(JSON.parse(e.data)); });
    es.addEventListener("node", function (e) { onNode(JSON.parse(e.data)); });
    es.addEventListener("backfill", function (e) { onBackfill(JSON.parse(e.data).backfill); });
    es.addEventListener("pulse", refreshCharts);
    es.addEventListener("resync", function () { es.close(); setTimeout(function () { location.reload(); }, 500); });
  }

  // Delete with confirmation (without JavaScript the server asks on a page of its own).
  document.querySelectorAll("form[data-confirm]").forEach(function (f) {
    f.addEventListener("submit", function (e) {
      if (!window.confirm(f.getAttribute("data-confirm"))) { e.preventDefault(); return; }
      var c = document.createElement("input"); c.type = "hidden"; c.name = "confirm"; c.value = "yes"; f.appendChild(c);
    });
  });

  // Live preview of the next fire times while a schedule (one expression a line) and its rules are typed.
  var sched = document.getElementById("schedule"), zone = document.getElementById("timeZone"), pv = document.getElementById("preview");
  function val(id) { var el = document.getElementById(id); return el ? el.value.trim() : ""; }
  if (sched && pv) {
    var timer = null;
    var update = function () {
      clearTimeout(timer);
      timer = setTimeout(function () {
        var lines = sched.value.split("\n").map(function (x) { return x.trim(); }).filter(Boolean);
        if (!lines.length) { pv.textContent = ""; return; }
        var body = { schedules: lines, timeZone: (zone && zone.value) || "UTC", count: 5, excluded: true };
        if (pv.dataset.job) body.id = pv.dataset.job;
        if (val("startAt")) body.startAt = val("startAt");
        if (val("endAt")) body.endAt = val("endAt");
        if (/^\d+$/.test(val("jitterSeconds"))) body.jitterSeconds = Number(val("jitterSeconds"));
        if (val("dstGap")) body.dstPolicy = { gap: val("dstGap"), overlap: val("dstOverlap") || "first" };
        var cals = document.getElementById("excludeCalendars");
        if (cals) body.excludeCalendars = Array.prototype.filter.call(cals.options, function (o) { return o.selected; })
          .map(function (o) { return o.value; });
        fetch("/api/schedules/preview", {
          method: "POST", credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
          body: JSON.stringify(body)
        }).then(function (r) { return r.json().then(function (b) { return [r.ok, b]; }); }).then(function (res) {
          pv.textContent = "";
          if (!res[0]) {
            var err = document.createElement("span"); err.className = "error";
            var d = res[1].details || {};
            err.textContent = Object.keys(d).map(function (k) { return k + ": " + d[k]; }).join("; ") || res[1].error;
            pv.appendChild(err); return;
          }
          var head = document.createElement("div"); head.className = "muted";
          head.textContent = "Next fires (" + res[1].description + (res[1].resolved ? "; H: " + res[1].resolved.join(", ") : "") + "):";
          pv.appendChild(head);
          var ol = document.createElement("ol"); ol.className = "fires";
          res[1].fires.forEach(function (f) {
            var li = document.createElement("li");
            li.textContent = f.local + (f.sendAt ? "  (sent " + f.sendAt + ")" : "");
            if (f.excluded) { li.className = "muted"; li.textContent += "  — not due: " + f.excluded; }
            if (f.dst) { var n = document.createElement("div"); n.className = "small"; n.textContent = f.dst; li.appendChild(n); }
            ol.appendChild(li);
          });
          pv.appendChild(ol);
          (res[1].transitions || []).slice(0, 2).forEach(function (t) {
            var d = document.createElement("div"); d.className = "small muted";
            d.textContent = "DST " + t.kind + " at " + t.at + " (" + t.from + " → " + t.to + "): " + t.policy; pv.appendChild(d);
          });
          (res[1].warnings || []).forEach(function (w) { var d = document.createElement("div"); d.className = "small"; d.textContent = w; pv.appendChild(d); });
        }).catch(function () {});
      }, 250);
    };
    ["schedule", "timeZone", "startAt", "endAt", "jitterSeconds", "dstGap", "dstOverlap", "excludeCalendars"].forEach(function (id) {
      var el = document.getElementById(id);
      if (el) { el.addEventListener("input", update); el.addEventListener("change", update); }
    });
    update();
  }

  // The tick strip on a job page: refetched every 5 s from the ledger (no stream event carries fates).
  var strip = document.getElementById("ticks");
  function renderTicks(data) {
    strip.textContent = "";
    data.ticks.forEach(function (t) {
      var s = document.createElement("span");
      s.className = "tick " + t.fate;
      s.setAttribute("role", "listitem");
      s.dataset.at = t.scheduledAt;
      s.title = t.scheduledAt + " · " + t.fate + (t.redelivered ? " (redelivered)" : "") + ": " + t.detail;
      strip.appendChild(s);
    });
    var legend = document.getElementById("ticks-legend");
    if (legend) {
      legend.textContent = "";
      Object.keys(data.counts).forEach(function (fate) {
        if (!data.counts[fate]) return;
        var dot = document.createElement("span");
        dot.className = "tick " + fate;
        legend.appendChild(dot);
        legend.appendChild(document.createTextNode(" " + fate + " " + data.counts[fate] + " "));
      });
    }
  }
  function refreshTicks() {
    var now = new Date();
    var from = new Date(now.getTime() - Number(strip.dataset.span) * 1000);
    fetch("/api/crons/" + encodeURIComponent(strip.dataset.job) + "/ticks?limit=" + strip.dataset.max +
          "&from=" + encodeURIComponent(from.toISOString()) + "&to=" + encodeURIComponent(now.toISOString()),
          { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) renderTicks(data); })
      .catch(function () {});
  }
  if (strip) setInterval(function () { if (!document.hidden) refreshTicks(); }, 5000);

  // A search answers within its time budget with what it found: a page with nothing found yet goes on by itself
  // (its progress bar shows how far), one with rows waits for "Search on".
  var searching = document.getElementById("search-progress");
  if (searching && searching.dataset.autoNext === "true") {
    var on = searching.querySelector('a[rel="next"]');
    if (on) setTimeout(function () { window.location.replace(on.href); }, 50);
  }

  connect();
})();
