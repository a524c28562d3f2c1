/*
 * karajo dashboard: keeps the server-rendered pages live.
 *
 * Rules this file keeps:
 *  - data from the server is only ever put in the page as text
 *    (textContent, createTextNode, setAttribute of plain attributes);
 *    never innerHTML, never a URL built from anything but IDs and numbers;
 *  - no inline script or style (the Content-Security-Policy forbids them);
 *  - polling, never re-downloading a whole log: the log page asks for the
 *    bytes after the ones it has (`offset`).
 */
(function () {
  "use strict";

  var doc = document;
  var API = "/karajo/api";
  var FINAL = { success: true, failed: true, canceled: true };
  var ZERO = "0001-01-01T00:00:00Z";
  var SECRET_KEY = "karajo.secret";
  var SVG_NS = "http://www.w3.org/2000/svg";

  function meta(name) {
    var m = doc.querySelector('meta[name="' + name + '"]');
    return m ? m.getAttribute("content") || "" : "";
  }

  var USERS = meta("karajo-users") === "1";
  var CSRF = meta("karajo-csrf");
  var CSRF_HEADER = meta("karajo-csrf-header") || "X-Karajo-CSRF";
  var RUN_NOW = meta("karajo-run-now").split(/\s+/).filter(Boolean);
  var PAGE = doc.body ? doc.body.getAttribute("data-page") : "";

  /* Server clock minus browser clock (ms), from the Date of API answers. */
  var skew = 0;
  var ui = { signer: "", polls: 0 };
  window.KarajoUI = ui;

  // --- small DOM helpers -----------------------------------------------------

  function el(tag, attrs, text) {
    var node = doc.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    }
    if (text !== undefined && text !== null) {
      node.textContent = String(text);
    }
    return node;
  }

  function svg(tag, attrs) {
    var node = doc.createElementNS(SVG_NS, tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
    return node;
  }

  function clear(node) {
    while (node.firstChild) {
      node.removeChild(node.firstChild);
    }
  }

  function setText(node, text) {
    if (node && node.textContent !== text) {
      node.textContent = text;
    }
  }

  function toast(message, isError) {
    var t = doc.getElementById("toast");
    if (!t) { return; }
    t.textContent = message;
    t.className = "toast show" + (isError ? " error" : "");
    clearTimeout(toast.timer);
    toast.timer = setTimeout(function () { t.className = "toast"; }, 5000);
  }

  function conn(message) {
    var c = doc.getElementById("conn");
    if (c) {
      setText(c, message);
      c.className = message ? "conn down" : "conn";
    }
  }

  function statusClass(status) {
    return "st-" + String(status).replace(/[^a-z_-]/g, "");
  }

  function validID(id) {
    return typeof id === "string" && /^[a-z0-9_-]{1,200}$/.test(id);
  }

  function apiKind(kind) {
    return kind === "job_http" ? "job_http" : "job_exec";
  }

  function logHref(kind, id, counter) {
    return "/karajo/app/log?kind=" + (kind === "job_http" ? "job_http" : "job") +
      "&id=" + encodeURIComponent(id) + "&counter=" + Number(counter);
  }

  // --- time --------------------------------------------------------------------

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function parseTime(text) {
    if (!text || text === ZERO) { return null; }
    var t = Date.parse(text);
    return isNaN(t) ? null : t;
  }

  function localTime(ms) {
    var d = new Date(ms);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }

  function span(seconds) {
    var s = Math.max(0, Math.round(seconds));
    if (s >= 86400) { return Math.floor(s / 86400) + "d " + pad(Math.floor(s % 86400 / 3600)) + "h"; }
    if (s >= 3600) { return Math.floor(s / 3600) + "h " + pad(Math.floor(s % 3600 / 60)) + "m " + pad(s % 60) + "s"; }
    if (s >= 60) { return Math.floor(s / 60) + "m " + pad(s % 60) + "s"; }
    return s + "s";
  }

  function now() { return Date.now() + skew; }

  /* Fill every <time>: last runs as local time + "ago", next runs as countdowns. */
  function tick() {
    var times = doc.querySelectorAll("time[datetime]");
    for (var i = 0; i < times.length; i++) {
      var node = times[i];
      var t = parseTime(node.getAttribute("datetime"));
      var text;
      if (node.classList.contains("countdown")) {
        if (node.getAttribute("data-paused") === "1") {
          text = "paused";
        } else if (t === null) {
          text = "not scheduled";
        } else {
          var left = (t - now()) / 1000;
          text = left > 0.5 ? "in " + span(left) : "due now";
          node.title = localTime(t);
        }
      } else if (t === null) {
        text = "never";
      } else if (node.classList.contains("rel")) {
        text = span((now() - t) / 1000) + " ago";
        node.title = localTime(t);
      } else {
        text = localTime(t);
      }
      setText(node, text);
    }
  }

  // --- HTTP ------------------------------------------------------------------------

  function goLogin() {
    location.assign("/karajo/?next=" + encodeURIComponent(location.pathname + location.search));
  }

  async function call(method, path, opts) {
    opts = opts || {};
    var res;
    try {
      res = await fetch(path, {
        method: method,
        headers: opts.headers || {},
        body: opts.body,
        credentials: "same-origin",
        cache: "no-store"
      });
    } catch (e) {
      return { ok: false, status: 0, name: "ERR_NETWORK", message: "cannot reach karajo" };
    }
    var date = Date.parse(res.headers.get("Date") || "");
    if (!isNaN(date)) {
      // Date has whole seconds: the server's clock is within [date, date+1s).
      skew = date + 500 - Date.now();
      if (Math.abs(skew) < 1500) { skew = 0; }
    }
    var body = null;
    try { body = await res.json(); } catch (e) { body = null; }
    var result = {
      ok: res.ok,
      status: res.status,
      data: body && typeof body === "object" ? body.data : null,
      name: body && typeof body.name === "string" ? body.name : "",
      message: body && typeof body.message === "string" ? body.message : ("HTTP " + res.status)
    };
    if (res.status === 401 && USERS && !opts.noLogin) {
      goLogin();
    }
    return result;
  }

  // --- signing (no users) --------------------------------------------------------

  function hexOf(buffer) {
    return window.KarajoSHA256.hex(new Uint8Array(buffer));
  }

  /* Hex HMAC-SHA256: WebCrypto where the browser has it, else sha256.js. */
  async function hmacHex(secret, message) {
    var subtle = window.crypto && window.crypto.subtle;
    if (subtle && secret.length > 0) {
      try {
        var enc = new TextEncoder();
        var key = await subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-256" },
          false, ["sign"]);
        var sig = await subtle.sign("HMAC", key, enc.encode(message));
        ui.signer = "webcrypto";
        return hexOf(sig);
      } catch (e) { /* fall back below */ }
    }
    ui.signer = "fallback";
    return window.KarajoSHA256.hmacHex(secret, message);
  }
  ui.hmacHex = hmacHex;

  function storage() {
    try { return window.sessionStorage; } catch (e) { return null; }
  }

  function storedSecret(jobID) {
    var s = storage();
    return s ? s.getItem(jobID ? SECRET_KEY + ".job." + jobID : SECRET_KEY) : null;
  }

  function storeSecret(value, jobID) {
    var s = storage();
    if (s) { s.setItem(jobID ? SECRET_KEY + ".job." + jobID : SECRET_KEY, value); }
    showForget();
  }

  function forgetSecret(jobID) {
    var s = storage();
    if (!s) { return; }
    if (jobID !== undefined) {
      s.removeItem(jobID ? SECRET_KEY + ".job." + jobID : SECRET_KEY);
    } else {
      for (var i = s.length - 1; i >= 0; i--) {
        var k = s.key(i);
        if (k && k.indexOf(SECRET_KEY) === 0) { s.removeItem(k); }
      }
    }
    showForget();
  }

  function showForget() {
    var b = doc.getElementById("forget-secret");
    if (b) { b.hidden = !storedSecret(null); }
  }

  var pendingAsk = null;

  /* Ask for a secret in the dialog; resolves to the text or null. */
  function askSecret(help) {
    var dialog = doc.getElementById("secret-dialog");
    if (!dialog || typeof dialog.showModal !== "function") {
      var typed = window.prompt(help);
      return Promise.resolve(typed ? typed : null);
    }
    if (pendingAsk) { pendingAsk(null); }
    setText(doc.getElementById("secret-help"), help);
    var input = doc.getElementById("secret-input");
    input.value = "";
    return new Promise(function (resolve) {
      pendingAsk = function (value) {
        pendingAsk = null;
        if (dialog.open) { dialog.close(); }
        resolve(value);
      };
      dialog.showModal();
      input.focus();
    });
  }

  function setupDialog() {
    var dialog = doc.getElementById("secret-dialog");
    if (!dialog) { return; }
    doc.getElementById("secret-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      var value = doc.getElementById("secret-input").value;
      if (pendingAsk && value) { pendingAsk(value); }
    });
    doc.getElementById("secret-cancel").addEventListener("click", function () {
      if (pendingAsk) { pendingAsk(null); } else { dialog.close(); }
    });
    dialog.addEventListener("cancel", function () {
      if (pendingAsk) { pendingAsk(null); }
    });
    var forget = doc.getElementById("forget-secret");
    if (forget) {
      forget.addEventListener("click", function () {
        forgetSecret();
        toast("The secret is forgotten in this tab.");
      });
    }
    showForget();
  }

  async function globalSecret(help) {
    var s = storedSecret(null);
    if (s) { return s; }
    s = await askSecret(help || "This karajo has no users: actions are signed with the secret " +
      "from its configuration. It is kept in this browser tab only.");
    if (s) { storeSecret(s, null); }
    return s;
  }

  function epoch() {
    return Math.floor(now() / 1000);
  }

  // --- actions ---------------------------------------------------------------------

  /* pause, resume, cancel or run_now through the management API. */
  async function manage(kind, action, id) {
    var help;
    for (var attempt = 0; attempt < 3; attempt++) {
      var params = "_karajo_epoch=" + epoch() + "&id=" + encodeURIComponent(id);
      var path = API + "/" + apiKind(kind) + "/" + action;
      var headers = {};
      var body;
      if (kind === "job_http") {
        path += "?" + params;
      } else {
        body = params;
        headers["Content-Type"] = "application/x-www-form-urlencoded";
      }
      if (USERS) {
        headers[CSRF_HEADER] = CSRF;
      } else {
        var secret = await globalSecret(help);
        if (!secret) { return { ok: false, message: "Nothing sent: no secret given." }; }
        headers["X-Karajo-Sign"] = await hmacHex(secret, params);
      }
      var r = await call("POST", path, { headers: headers, body: body });
      if (!USERS && r.status === 401) {
        forgetSecret(null);
        help = "karajo refused that secret (" + r.message + "). Enter the secret again.";
        continue;
      }
      return r;
    }
    return { ok: false, message: "The secret was refused." };
  }

  /* Run now by the job's own webhook, signed like the original page did. */
  async function runByWebhook(card) {
    var path = card.getAttribute("data-path") || "";
    var auth = card.getAttribute("data-auth") || "hmac-sha256";
    var header = card.getAttribute("data-sign-header") || "X-Karajo-Sign";
    var id = card.getAttribute("data-id");
    var name = (card.querySelector(".name") || {}).textContent || id;
    var help;
    for (var attempt = 0; attempt < 3; attempt++) {
      var secret = storedSecret(id) || await globalSecret(help);
      if (!secret) { return { ok: false, message: "Nothing sent: no secret given." }; }
      var body = JSON.stringify({ _karajo_epoch: epoch() });
      var sig = await hmacHex(secret, body);
      var headers = { "Content-Type": "application/json" };
      if (auth === "github") {
        headers["X-Hub-Signature-256"] = "sha256=" + sig;
      } else {
        headers[header] = sig;
      }
      var url = API + "/job_exec/run" + path.split("/").map(encodeURIComponent).join("/");
      var r = await call("POST", url, { headers: headers, body: body });
      if (r.status === 403 && r.name === "ERR_JOB_FORBIDDEN") {
        forgetSecret(id);
        var own = await askSecret("The job \u201c" + name + "\u201d refused the signature: it may " +
          "have its own secret. Enter the secret of this job.");
        if (!own) { return { ok: false, message: "Nothing sent: no secret given." }; }
        storeSecret(own, id);
        continue;
      }
      return r;
    }
    return { ok: false, message: "The job's secret was refused." };
  }

  async function act(card, action) {
    var kind = card.getAttribute("data-kind");
    var id = card.getAttribute("data-id");
    if (!validID(id)) { return; }
    var msg = card.querySelector('[data-field="msg"]');
    var buttons = card.querySelectorAll("button[data-action]");
    card.classList.add("busy");
    for (var i = 0; i < buttons.length; i++) { buttons[i].disabled = true; }
    setText(msg, "");
    var r;
    try {
      if (action === "run" && RUN_NOW.indexOf(apiKind(kind)) < 0) {
        r = await runByWebhook(card);
      } else {
        r = await manage(kind, action === "run" ? "run_now" : action, id);
      }
    } finally {
      card.classList.remove("busy");
    }
    if (msg) {
      msg.className = "msg " + (r.ok ? "ok" : "error");
      setText(msg, r.ok ? (r.message || "done") : ("Failed: " + r.message));
    }
    if (r.ok && r.data && typeof r.data === "object" && r.data.id === id) {
      updateCard(card, r.data);
    } else {
      refreshButtons(card, card.getAttribute("data-status"));
    }
    pollSoon();
  }

  function setupActions() {
    doc.addEventListener("click", function (ev) {
      var button = ev.target.closest ? ev.target.closest("button[data-action]") : null;
      if (!button || button.disabled) { return; }
      var card = button.closest(".card");
      if (card) {
        act(card, button.getAttribute("data-action"));
      }
    });
    var logout = doc.getElementById("logout");
    if (logout) {
      logout.addEventListener("click", async function () {
        var headers = {};
        headers[CSRF_HEADER] = CSRF;
        await call("POST", API + "/auth/logout", { headers: headers, noLogin: true });
        location.assign("/karajo/");
      });
    }
  }

  // --- cards -------------------------------------------------------------------------

  function refreshButtons(card, status) {
    var runOk = card.getAttribute("data-run-now") === "1";
    // A paused job may still have a run going on: its newest log says so.
    var active = status === "running" || card.getAttribute("data-active") === "1";
    var rules = {
      run: !runOk || status === "paused",
      pause: status === "paused",
      resume: status !== "paused",
      cancel: !active
    };
    Object.keys(rules).forEach(function (action) {
      var b = card.querySelector('button[data-action="' + action + '"]');
      if (b) { b.disabled = rules[action]; }
    });
  }

  /* Known run times: "kind/id/counter" -> {start, end} (seconds). */
  var spans = {};
  var spanWanted = {};

  function spanKey(kind, id, counter) { return kind + "/" + id + "/" + counter; }

  function readServerSpans(card) {
    var kind = card.getAttribute("data-kind"), id = card.getAttribute("data-id");
    var bars = card.querySelectorAll("rect[data-counter]");
    for (var i = 0; i < bars.length; i++) {
      var d = bars[i].getAttribute("data-duration"), s = bars[i].getAttribute("data-start");
      if (d !== "" && d !== null) {
        var start = s ? Number(s) : 0;
        spans[spanKey(kind, id, bars[i].getAttribute("data-counter"))] = { start: start, end: start + Number(d) };
      }
    }
  }

  var STAMP = /^(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d) UTC /;

  function stampOf(line) {
    var m = STAMP.exec(line);
    if (!m) { return null; }
    return Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]) / 1000;
  }

  function spanOfText(text) {
    var lines = text.split("\n");
    var start = null, end = null, i;
    for (i = 0; i < lines.length && start === null; i++) { start = stampOf(lines[i]); }
    for (i = lines.length - 1; i >= 0 && end === null; i--) { end = stampOf(lines[i]); }
    return start === null || end === null ? null : { start: start, end: end };
  }

  function b64bytes(text) {
    var bin = atob(text || "");
    var out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { out[i] = bin.charCodeAt(i); }
    return out;
  }

  /* The times of a finished run (from its log's timestamps), once, small logs only. */
  async function fetchSpan(kind, id, counter) {
    var key = spanKey(kind, id, counter);
    if (spanWanted[key]) { return; }
    spanWanted[key] = true;
    var base = API + "/" + apiKind(kind) + "/log?id=" + encodeURIComponent(id) + "&counter=" + counter;
    var head = await call("GET", base + "&offset=999999999999");
    if (!head.ok || !head.data || head.data.size > 65536) { return; }
    var whole = await call("GET", base + "&offset=0");
    if (!whole.ok || !whole.data) { return; }
    var found = spanOfText(new TextDecoder("utf-8").decode(b64bytes(whole.data.content)));
    if (found) {
      spans[key] = found;
      redrawJob(kind, id);
    }
  }

  var lastJobs = {};

  function redrawJob(kind, id) {
    var job = lastJobs[kind + "/" + id];
    var card = doc.getElementById(kind + "-" + id);
    if (job && card) {
      drawChart(card, job);
      updateRunTable(card, job);
    }
  }

  function sortedLogs(job) {
    var logs = Array.isArray(job.logs) ? job.logs.slice() : [];
    logs.sort(function (a, b) { return b.counter - a.counter; });
    return logs;
  }

  function durationOf(kind, id, log) {
    var s = spans[spanKey(kind, id, log.counter)];
    return s && FINAL[log.status] ? Math.max(0, s.end - s.start) : null;
  }

  var W = 200, H = 40, BAR = 8, GAP = 2, CHART_RUNS = 20, CARD_RUNS = 5;

  function drawChart(card, job) {
    var kind = card.getAttribute("data-kind"), id = card.getAttribute("data-id");
    var box = card.querySelector("svg.chart");
    if (!box) { return; }
    var logs = sortedLogs(job).slice(0, CHART_RUNS).reverse();
    var durations = logs.map(function (l) { return durationOf(kind, id, l); });
    var longest = Math.max.apply(null, [0].concat(durations.filter(function (d) { return d !== null; })));
    var signature = logs.map(function (l, i) { return l.counter + l.status + durations[i]; }).join(",");
    if (box.getAttribute("data-sig") === signature) { return; }
    box.setAttribute("data-sig", signature);
    while (box.lastChild && box.lastChild.nodeName !== "line") { box.removeChild(box.lastChild); }
    logs.forEach(function (l, i) {
      var d = durations[i], h;
      if (d !== null && longest > 0) { h = Math.max(3, (H - 2) * d / longest); }
      else if (d !== null) { h = 3; }
      else { h = l.status === "running" ? H - 2 : 6; }
      var rect = svg("rect", {
        "class": "bar " + statusClass(l.status), x: i * (BAR + GAP), y: (H - 1 - h).toFixed(1),
        width: BAR, height: h.toFixed(1), "data-counter": l.counter
      });
      var title = svg("title");
      title.textContent = "#" + l.counter + " " + l.status + (d !== null ? ", " + span(d) : "");
      rect.appendChild(title);
      box.appendChild(rect);
      if (d === null && FINAL[l.status]) { fetchSpan(kind, id, l.counter); }
    });
  }

  function updateRuns(card, job) {
    var list = card.querySelector('[data-field="runs"]');
    if (!list) { return; }
    var kind = card.getAttribute("data-kind"), id = card.getAttribute("data-id");
    var logs = sortedLogs(job).slice(0, CARD_RUNS);
    var signature = logs.map(function (l) { return l.counter + ":" + l.status; }).join(",");
    if (list.getAttribute("data-sig") === signature) { return; }
    list.setAttribute("data-sig", signature);
    clear(list);
    if (!logs.length) {
      list.appendChild(el("li", { "class": "none" }, "no runs yet"));
      return;
    }
    logs.forEach(function (l) {
      var a = el("a", {
        href: logHref(kind, id, l.counter),
        "class": "run " + statusClass(l.status),
        title: "run " + l.counter + ": " + l.status,
        "data-counter": String(Number(l.counter))
      }, "#" + Number(l.counter));
      var li = el("li");
      li.appendChild(a);
      list.appendChild(li);
    });
  }

  function updateRunTable(card, job) {
    var body = doc.getElementById("run-rows");
    if (!body) { return; }
    var kind = card.getAttribute("data-kind"), id = card.getAttribute("data-id");
    var logs = sortedLogs(job);
    var signature = logs.map(function (l) {
      var s = spans[spanKey(kind, id, l.counter)];
      return l.counter + ":" + l.status + ":" + (s ? s.start + "-" + s.end : "");
    }).join(",");
    if (body.getAttribute("data-sig") === signature) { return; }
    body.setAttribute("data-sig", signature);
    clear(body);
    if (!logs.length) {
      var empty = el("tr", { "class": "none" });
      empty.appendChild(el("td", { colspan: "4" }, "no runs yet"));
      body.appendChild(empty);
      return;
    }
    logs.forEach(function (l) {
      var tr = el("tr", { "data-counter": String(Number(l.counter)) });
      var td = el("td");
      td.appendChild(el("a", { href: logHref(kind, id, l.counter) }, "#" + Number(l.counter)));
      tr.appendChild(td);
      td = el("td");
      td.appendChild(el("span", { "class": "status " + statusClass(l.status) }, l.status));
      tr.appendChild(td);
      var s = spans[spanKey(kind, id, l.counter)];
      td = el("td");
      if (s) {
        var t = el("time", { datetime: new Date(s.start * 1000).toISOString() });
        t.textContent = localTime(s.start * 1000);
        td.appendChild(t);
      } else {
        td.textContent = l.status === "running" ? "running now" : "—";
      }
      tr.appendChild(td);
      var d = durationOf(kind, id, l);
      tr.appendChild(el("td", { "data-field": "duration" }, d === null ? "—" : span(d)));
      body.appendChild(tr);
      if (d === null && FINAL[l.status]) { fetchSpan(kind, id, l.counter); }
    });
  }

  function updateCard(card, job) {
    var kind = card.getAttribute("data-kind"), id = card.getAttribute("data-id");
    lastJobs[kind + "/" + id] = job;
    var status = String(job.status || "");
    card.setAttribute("data-status", status);
    var logs = Array.isArray(job.logs) ? job.logs : [];
    var newest = logs.length ? logs[logs.length - 1] : null;
    card.setAttribute("data-active", newest && newest.status === "running" ? "1" : "");
    var st = card.querySelector('[data-field="status"]');
    if (st) {
      setText(st, status);
      st.className = "status " + statusClass(status);
    }
    var last = card.querySelector('[data-field="last_run"]');
    if (last) { last.setAttribute("datetime", String(job.last_run || ZERO)); }
    var next = card.querySelector('[data-field="next_run"]');
    if (next) {
      next.setAttribute("datetime", String(job.next_run || ZERO));
      next.setAttribute("data-paused", status === "paused" ? "1" : "");
    }
    updateRuns(card, job);
    drawChart(card, job);
    updateRunTable(card, job);
    refreshButtons(card, status);
    tick();
  }

  function updateSummary() {
    var list = doc.getElementById("counts");
    if (!list) { return; }
    var counts = {};
    var cards = doc.querySelectorAll(".card[data-id]");
    for (var i = 0; i < cards.length; i++) {
      var s = cards[i].getAttribute("data-status") ||
        (cards[i].querySelector('[data-field="status"]') || {}).textContent || "";
      counts[s] = (counts[s] || 0) + 1;
    }
    var signature = JSON.stringify(counts);
    if (list.getAttribute("data-sig") === signature) { return; }
    list.setAttribute("data-sig", signature);
    clear(list);
    Object.keys(counts).sort().forEach(function (s) {
      var li = el("li");
      li.appendChild(el("span", { "class": "status " + statusClass(s) }, s));
      li.appendChild(doc.createTextNode(" " + counts[s]));
      list.appendChild(li);
    });
  }

  // --- polling -------------------------------------------------------------------------

  var pollTimer = null;
  var failures = 0;
  var polling = false;

  function pollSoon() {
    schedulePoll(300);
  }

  function schedulePoll(ms) {
    clearTimeout(pollTimer);
    pollTimer = setTimeout(poll, ms);
  }

  async function poll() {
    if (polling) { return; }
    polling = true;
    var ok = false;
    try {
      ok = await (PAGE === "job" ? pollJob() : pollEnvironment());
    } finally {
      polling = false;
    }
    ui.polls++;
    failures = ok ? 0 : failures + 1;
    var delay = doc.hidden ? 15000 : 3000;
    if (!ok) { delay = Math.min(30000, 2000 * Math.pow(2, failures - 1)); }
    schedulePoll(delay);
  }

  function reportPoll(r) {
    if (r.ok) {
      conn("");
    } else {
      conn(r.status === 0 ? "offline — retrying" : "update failed: " + r.message);
    }
    return r.ok;
  }

  async function pollEnvironment() {
    var r = await call("GET", API + "/environment");
    if (r.ok && r.data) {
      [["job", r.data.jobs], ["job_http", r.data.http_jobs]].forEach(function (pair) {
        var table = pair[1] || {};
        Object.keys(table).forEach(function (name) {
          var job = table[name];
          if (!job || !validID(job.id)) { return; }
          var card = doc.getElementById(pair[0] + "-" + job.id);
          if (card) { updateCard(card, job); }
        });
      });
      updateSummary();
      applyFilter();
    }
    return reportPoll(r);
  }

  async function pollJob() {
    var card = doc.querySelector(".card[data-id]");
    if (!card) { return true; }
    var kind = card.getAttribute("data-kind"), id = card.getAttribute("data-id");
    var r = await call("GET", API + "/" + apiKind(kind) + "?id=" + encodeURIComponent(id));
    if (r.ok && r.data) { updateCard(card, r.data); }
    return reportPoll(r);
  }

  // --- filter ------------------------------------------------------------------------------

  function applyFilter() {
    var input = doc.getElementById("filter");
    if (!input) { return; }
    var words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
    var cards = doc.querySelectorAll(".card[data-id]");
    var shown = 0;
    for (var i = 0; i < cards.length; i++) {
      var c = cards[i];
      var text = (c.getAttribute("data-search") || "") + " " +
        ((c.querySelector('[data-field="status"]') || {}).textContent || "");
      var match = words.every(function (w) { return text.indexOf(w) >= 0; });
      c.hidden = !match;
      if (match) { shown++; }
    }
    setText(doc.getElementById("filter-count"), words.length ? shown + " of " + cards.length + " shown" : "");
    var none = doc.getElementById("no-match");
    if (none) { none.hidden = !(words.length && shown === 0 && cards.length); }
  }

  function setupFilter() {
    var input = doc.getElementById("filter");
    if (!input) { return; }
    var s = storage();
    if (s && s.getItem("karajo.filter")) { input.value = s.getItem("karajo.filter"); }
    input.addEventListener("input", function () {
      if (s) { s.setItem("karajo.filter", input.value); }
      applyFilter();
    });
    doc.addEventListener("keydown", function (ev) {
      var tag = (ev.target && ev.target.tagName) || "";
      if (ev.key === "/" && tag !== "INPUT" && tag !== "TEXTAREA" && !ev.ctrlKey && !ev.metaKey) {
        ev.preventDefault();
        input.focus();
      }
    });
    applyFilter();
  }

  // --- log page -----------------------------------------------------------------------------

  function setupLog() {
    var box = doc.getElementById("log-page");
    var pre = doc.getElementById("log");
    if (!box || !pre) { return; }
    var kind = box.getAttribute("data-kind");
    var id = box.getAttribute("data-id");
    var counter = Number(box.getAttribute("data-counter"));
    var offset = Number(box.getAttribute("data-offset")) || 0;
    var status = box.getAttribute("data-status");
    var decoder = new TextDecoder("utf-8");
    var follow = doc.getElementById("follow");
    var live = doc.getElementById("log-live");
    var statusNode = doc.getElementById("log-status");
    var size = doc.getElementById("log-size");
    var misses = 0;
    if (!validID(id)) { return; }
    var base = API + "/" + apiKind(kind) + "/log?id=" + encodeURIComponent(id) + "&counter=" + counter;

    function showSize(n) {
      setText(size, n < 10240 ? n + " bytes" : (n / 1024).toFixed(1) + " KiB");
    }

    function finish() {
      setText(live, "");
      var found = spanOfText(pre.textContent);
      if (found) { setText(doc.getElementById("log-duration"), span(found.end - found.start)); }
    }

    function scroll() {
      if (follow && follow.checked) { pre.scrollTop = pre.scrollHeight; }
    }

    showSize(offset);
    scroll();
    if (FINAL[status]) { return; }
    setText(live, "live");
    ui.logPolls = 0;

    async function step() {
      var r = await call("GET", base + "&offset=" + offset);
      ui.logPolls++;
      if (r.ok && r.data) {
        misses = 0;
        var bytes = b64bytes(r.data.content);
        var done = !!FINAL[r.data.status];
        if (bytes.length) {
          var text = decoder.decode(bytes, { stream: !done });
          if (text) { pre.appendChild(doc.createTextNode(text)); }
          offset += bytes.length;
          scroll();
        } else if (done) {
          var rest = decoder.decode();
          if (rest) { pre.appendChild(doc.createTextNode(rest)); }
        }
        showSize(Math.max(offset, Number(r.data.size) || 0));
        status = String(r.data.status);
        setText(statusNode, status);
        statusNode.className = "status " + statusClass(status);
        box.setAttribute("data-status", status);
        if (done) {
          finish();
          return;
        }
        conn("");
      } else if (r.status === 404) {
        setText(live, "this log is gone");
        return;
      } else {
        misses++;
        conn(r.status === 0 ? "offline — retrying" : "update failed: " + r.message);
      }
      setTimeout(step, misses ? Math.min(30000, 1000 * Math.pow(2, misses)) : 700);
    }
    setTimeout(step, 300);
  }

  // --- login page --------------------------------------------------------------------------

  function safeNext(value) {
    if (value && /^\/karajo\/app\/[A-Za-z0-9_./?&=%-]*$/.test(value) &&
        value.indexOf("//") < 0 && value.indexOf("..") < 0) {
      return value;
    }
    return "/karajo/app/";
  }

  function setupLogin() {
    var form = doc.getElementById("login-form");
    if (!form) { return; }
    var error = doc.getElementById("login-error");
    form.addEventListener("submit", async function (ev) {
      ev.preventDefault();
      var button = form.querySelector('button[type="submit"]');
      button.disabled = true;
      setText(error, "");
      var body = new URLSearchParams();
      body.set("name", form.elements.name.value);
      body.set("password", form.elements.password.value);
      var r = await call("POST", API + "/auth/login", {
        body: body.toString(),
        headers: { "Content-Type": "application/x-www-form-urlencoded" },
        noLogin: true
      });
      button.disabled = false;
      if (r.ok) {
        location.assign(safeNext(form.elements.next.value));
        return;
      }
      setText(error, r.message || "Login failed.");
      form.elements.password.value = "";
      form.elements.password.focus();
    });
  }

  // --- start -------------------------------------------------------------------------------

  function start() {
    setupLogin();
    setupDialog();
    setupActions();
    setupFilter();
    var cards = doc.querySelectorAll(".card[data-id]");
    for (var i = 0; i < cards.length; i++) {
      readServerSpans(cards[i]);
      cards[i].setAttribute("data-status",
        (cards[i].querySelector('[data-field="status"]') || {}).textContent || "");
    }
    tick();
    setInterval(tick, 1000);
    if (PAGE === "dashboard" || PAGE === "job") {
      schedulePoll(50);
      doc.addEventListener("visibilitychange", function () {
        if (!doc.hidden) { pollSoon(); }
      });
    }
    if (PAGE === "log") { setupLog(); }
    ui.ready = true;
  }

  if (doc.readyState === "loading") {
    doc.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
