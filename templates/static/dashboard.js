/*
 * The dashboard and a job's page: cards kept live by polling the API
 * (the environment, or the one job), their charts and run lists redrawn
 * as runs come and go, the buttons, and the dashboard's filter box.
 */

import {
  API, FINAL, PAGE, apiOf, call, clear, conn, doc, el, parseTime, runHref, runTimes, setText,
  span, statusClass, storage, svg, tick, toast, ui, validID
} from "./common.js";
import { updateCluster } from "./cluster.js";
import { manage, setupDialog } from "./sign.js";

function numberAttr(node, name, fallback) {
  const value = Number(node.getAttribute(name));
  return node.hasAttribute(name) && isFinite(value) ? value : fallback;
}

// --- actions -----------------------------------------------------------------

async function act(card, action) {
  const api = apiOf(card);
  const id = card.getAttribute("data-id");
  if (!validID(id) || !api) { return; }
  const msg = card.querySelector('[data-field="msg"]');
  const buttons = card.querySelectorAll("button[data-action]");
  card.classList.add("busy");
  for (const b of buttons) { b.disabled = true; }
  setText(msg, "");
  let r;
  try {
    r = await manage(api, action === "run" ? "run_now" : action, id);
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
    const button = ev.target.closest ? ev.target.closest("button[data-action]") : null;
    if (!button || button.disabled) { return; }
    const card = button.closest(".card");
    if (card) {
      act(card, button.getAttribute("data-action"));
    }
  });
}

// --- cards -------------------------------------------------------------------

function refreshButtons(card, status) {
  // A paused job may still have a run going on: its newest log says so.
  const active = status === "running" || card.getAttribute("data-active") === "1";
  const rules = {
    run: status === "paused",
    pause: status === "paused",
    resume: status !== "paused",
    cancel: !active
  };
  Object.keys(rules).forEach(function (action) {
    const b = card.querySelector('button[data-action="' + action + '"]');
    if (b) { b.disabled = rules[action]; }
  });
}

/* Run times the server rendered: "kind/id/counter" -> {start, end} (seconds). */
const spans = {};

function spanKey(kind, id, counter) { return kind + "/" + id + "/" + counter; }

/* The times of the chart's bars and the run table's rows, as rendered. */
function readServerSpans(card) {
  const kind = card.getAttribute("data-kind"), id = card.getAttribute("data-id");
  const rows = card.querySelectorAll("rect[data-counter]");
  const table = doc.getElementById("run-rows");
  const all = Array.from(rows).concat(table ? Array.from(table.querySelectorAll("tr[data-counter]")) : []);
  for (const node of all) {
    const d = node.getAttribute("data-duration"), s = node.getAttribute("data-start");
    if (d && s) {
      const start = Number(s);
      spans[spanKey(kind, id, node.getAttribute("data-counter"))] = { start: start, end: start + Number(d) };
    }
  }
}

/* A run's {start, end}: from the API's logs[] entry, else as the server rendered it. */
function timesOf(kind, id, log) {
  return runTimes(log) || spans[spanKey(kind, id, log.counter)] || null;
}

function durationOf(kind, id, log) {
  const s = timesOf(kind, id, log);
  return s && s.end !== null && FINAL[log.status] ? Math.max(0, s.end - s.start) : null;
}

function sortedLogs(job) {
  const logs = Array.isArray(job.logs) ? job.logs.slice() : [];
  logs.sort(function (a, b) { return b.counter - a.counter; });
  return logs;
}

/* Redraw the chart like karajo/web/chart.py, with the geometry its data-* attributes give. */
function drawChart(card, job) {
  const kind = card.getAttribute("data-kind"), id = card.getAttribute("data-id");
  const box = card.querySelector("svg.chart");
  if (!box) { return; }
  const height = numberAttr(box, "data-height", 40);
  const bar = numberAttr(box, "data-bar-width", 8);
  const gap = numberAttr(box, "data-bar-gap", 2);
  const logs = sortedLogs(job).slice(0, numberAttr(box, "data-runs", 20)).reverse();
  const durations = logs.map(function (l) { return durationOf(kind, id, l); });
  const longest = Math.max.apply(null, [0].concat(durations.filter(function (d) { return d !== null; })));
  const signature = logs.map(function (l, i) { return l.counter + l.status + durations[i]; }).join(",");
  if (box.getAttribute("data-sig") === signature) { return; }
  box.setAttribute("data-sig", signature);
  while (box.lastChild && box.lastChild.nodeName !== "line") { box.removeChild(box.lastChild); }
  logs.forEach(function (l, i) {
    const d = durations[i];
    let h;
    if (d !== null && longest > 0) { h = Math.max(3, (height - 2) * d / longest); }
    else if (d !== null) { h = 3; }
    else { h = l.status === "running" ? height - 2 : 6; }
    const rect = svg("rect", {
      "class": "bar " + statusClass(l.status), x: i * (bar + gap), y: (height - 1 - h).toFixed(1),
      width: bar, height: h.toFixed(1), "data-counter": l.counter
    });
    const title = svg("title");
    title.textContent = "#" + l.counter + " " + l.status + (d !== null ? ", " + span(d) : "");
    rect.appendChild(title);
    box.appendChild(rect);
  });
}

function updateRuns(card, job) {
  const list = card.querySelector('[data-field="runs"]');
  if (!list) { return; }
  const kind = card.getAttribute("data-kind"), id = card.getAttribute("data-id");
  const logs = sortedLogs(job).slice(0, numberAttr(list, "data-limit", 5));
  const signature = logs.map(function (l) { return l.counter + ":" + l.status; }).join(",");
  if (list.getAttribute("data-sig") === signature) { return; }
  list.setAttribute("data-sig", signature);
  clear(list);
  if (!logs.length) {
    list.appendChild(el("li", { "class": "none" }, "no runs yet"));
    return;
  }
  logs.forEach(function (l) {
    const d = durationOf(kind, id, l);
    const a = el("a", {
      href: runHref(kind, id, l.counter),
      "class": "run " + statusClass(l.status),
      title: "run " + l.counter + ": " + l.status + (d !== null ? ", " + span(d) : "") +
        (typeof l.node === "string" && l.node ? ", on " + l.node : ""),
      "data-counter": String(Number(l.counter))
    }, "#" + Number(l.counter));
    const li = el("li");
    li.appendChild(a);
    list.appendChild(li);
  });
}

/*
 * The job page's history is one page of the kept runs, as the server
 * rendered it: rows already there get their outcome as runs end, and a
 * link to the newest page shows once newer runs have started.
 */
function updateRunTable(card, job) {
  const body = doc.getElementById("run-rows");
  if (!body) { return; }
  const kind = card.getAttribute("data-kind"), id = card.getAttribute("data-id");
  const logs = sortedLogs(job);
  const newest = numberAttr(body, "data-newest", 0);
  const newer = doc.getElementById("newer");
  if (newer && logs.length && Number(logs[0].counter) > newest) { newer.hidden = false; }
  for (const l of logs) {
    const tr = body.querySelector('tr[data-counter="' + Number(l.counter) + '"]');
    if (!tr) { continue; }
    const st = tr.querySelector('[data-field="status"] .status');
    if (st && st.textContent !== l.status) {
      setText(st, l.status);
      st.className = "status " + statusClass(l.status);
    }
    const d = durationOf(kind, id, l);
    if (d !== null) { setText(tr.querySelector('[data-field="duration"]'), span(d)); }
  }
}

/* The newest failed run's start (seconds), for sorting by last failure. */
function lastFailure(kind, id, job) {
  for (const l of sortedLogs(job)) {
    if (l.status === "failed") {
      const s = timesOf(kind, id, l);
      return s ? s.start : 0;
    }
  }
  return null;
}

function updateCard(card, job) {
  const status = String(job.status || "");
  card.setAttribute("data-status", status);
  const logs = Array.isArray(job.logs) ? job.logs : [];
  const newest = logs.length ? logs[logs.length - 1] : null;
  card.setAttribute("data-active", newest && newest.status === "running" ? "1" : "");
  const st = card.querySelector('[data-field="status"]');
  if (st) {
    setText(st, status);
    st.className = "status " + statusClass(status);
  }
  const last = card.querySelector('[data-field="last_run"]');
  if (last) { last.setAttribute("datetime", String(job.last_run || "")); }
  const nextMs = parseTime(String(job.next_run || ""));
  card.setAttribute("data-next", nextMs === null ? "" : String(Math.round(nextMs / 1000)));
  const failed = lastFailure(card.getAttribute("data-kind"), card.getAttribute("data-id"), job);
  if (failed !== null) { card.setAttribute("data-failure", String(failed)); }
  const next = card.querySelector('[data-field="next_run"]');
  if (next) {
    next.setAttribute("datetime", String(job.next_run || ""));
    next.setAttribute("data-paused", status === "paused" ? "1" : "");
  }
  updateRuns(card, job);
  drawChart(card, job);
  updateRunTable(card, job);
  refreshButtons(card, status);
  tick();
}

function updateSummary() {
  const list = doc.getElementById("counts");
  if (!list) { return; }
  const counts = {};
  for (const card of doc.querySelectorAll(".card[data-id]")) {
    const s = card.getAttribute("data-status") ||
      (card.querySelector('[data-field="status"]') || {}).textContent || "";
    counts[s] = (counts[s] || 0) + 1;
  }
  const signature = JSON.stringify(counts);
  if (list.getAttribute("data-sig") === signature) { return; }
  list.setAttribute("data-sig", signature);
  clear(list);
  Object.keys(counts).sort().forEach(function (s) {
    const li = el("li");
    li.appendChild(el("span", { "class": "status " + statusClass(s) }, s));
    li.appendChild(doc.createTextNode(" " + counts[s]));
    list.appendChild(li);
  });
}

// --- polling -----------------------------------------------------------------

let pollTimer = null;
let failures = 0;
let polling = false;

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
  let ok;
  try {
    ok = await (PAGE === "job" ? pollJob() : pollEnvironment());
  } finally {
    polling = false;
  }
  ui.polls++;
  failures = ok ? 0 : failures + 1;
  let delay = doc.hidden ? 15000 : 3000;
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

/* The cards by "table/id" (table: the API's map of their kind, data-table). */
const cardIndex = new Map();

async function pollEnvironment() {
  const r = await call("GET", API + "/environment");
  if (r.ok && r.data) {
    const tables = new Set(Array.from(cardIndex.keys(), function (k) { return k.split("/")[0]; }));
    for (const table of tables) {
      const jobs = r.data[table];
      if (!jobs || typeof jobs !== "object") { continue; }
      for (const job of Object.values(jobs)) {
        const card = job && validID(job.id) ? cardIndex.get(table + "/" + job.id) : null;
        if (card) { updateCard(card, job); }
      }
    }
    updateSummary();
    updateCluster(r.data);
    applySort();
    applyFilter();
  }
  return reportPoll(r);
}

async function pollJob() {
  const card = doc.querySelector(".card[data-id]");
  if (!card) { return true; }
  const api = apiOf(card), id = card.getAttribute("data-id");
  if (!api || !validID(id)) { return true; }
  const r = await call("GET", API + "/" + api + "?id=" + encodeURIComponent(id));
  if (r.ok && r.data) { updateCard(card, r.data); }
  return reportPoll(r);
}

// --- filter ------------------------------------------------------------------

/* The status and kind boxes' values ("" for all). */
function picked(idName) {
  const box = doc.getElementById(idName);
  return box ? box.value : "";
}

function applyFilter() {
  const input = doc.getElementById("filter");
  if (!input) { return; }
  const words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
  const status = picked("status-filter"), kind = picked("kind-filter");
  const cards = doc.querySelectorAll(".card[data-id]");
  let shown = 0;
  for (const c of cards) {
    const st = (c.querySelector('[data-field="status"]') || {}).textContent || "";
    const text = (c.getAttribute("data-search") || "") + " " + st;
    const match = words.every(function (w) { return text.indexOf(w) >= 0; }) &&
      (!status || st === status) && (!kind || c.getAttribute("data-kind") === kind);
    if (c.hidden === match) { c.hidden = !match; }
    if (match) { shown++; }
  }
  const filtered = words.length || status || kind;
  setText(doc.getElementById("filter-count"), filtered ? shown + " of " + cards.length + " shown" : "");
  const none = doc.getElementById("no-match");
  if (none) { none.hidden = !(filtered && shown === 0 && cards.length); }
}

/* Seconds in a card's data-* attribute; null when empty. */
function secondsAttr(card, name) {
  const v = card.getAttribute(name);
  return v ? Number(v) : null;
}

const SORTS = {
  name: function (a, b) {
    return (a.getAttribute("data-name") || "").localeCompare(b.getAttribute("data-name") || "");
  },
  /* soonest first; no next run (paused, webhook only) last */
  next: function (a, b) {
    const x = secondsAttr(a, "data-next"), y = secondsAttr(b, "data-next");
    if (x === null || y === null) { return (x === null) - (y === null); }
    return x - y;
  },
  /* the most recent failure first; never failed last */
  failure: function (a, b) {
    const x = secondsAttr(a, "data-failure"), y = secondsAttr(b, "data-failure");
    if (x === null || y === null) { return (x === null) - (y === null); }
    return y - x;
  }
};

function applySort() {
  const box = doc.getElementById("cards");
  const sort = picked("sort");
  if (!box) { return; }
  const cards = Array.from(box.querySelectorAll(".card[data-id]"));
  const order = cards.slice().sort(function (a, b) {
    const by = SORTS[sort] ? SORTS[sort](a, b) : 0;
    return by || numberAttr(a, "data-order", 0) - numberAttr(b, "data-order", 0);
  });
  const same = order.every(function (c, i) { return c === cards[i]; });
  if (!same) {
    for (const c of order) { box.appendChild(c); }
  }
}

function local() {
  try { return window.localStorage; } catch { return null; }
}

function setView(table) {
  const box = doc.getElementById("cards");
  const toggle = doc.getElementById("view-toggle");
  if (!box || !toggle) { return; }
  box.classList.toggle("compact", table);
  toggle.setAttribute("aria-pressed", table ? "true" : "false");
}

function setupFilter() {
  const input = doc.getElementById("filter");
  if (!input) { return; }
  const s = storage(), keep = local();
  if (s && s.getItem("karajo.filter")) { input.value = s.getItem("karajo.filter"); }
  input.addEventListener("input", function () {
    if (s) { s.setItem("karajo.filter", input.value); }
    applyFilter();
  });
  for (const name of ["status-filter", "kind-filter", "sort"]) {
    const box = doc.getElementById(name);
    if (!box) { continue; }
    const saved = keep ? keep.getItem("karajo." + name) : null;
    if (saved !== null && Array.from(box.options).some(function (o) { return o.value === saved; })) {
      box.value = saved;
    }
    box.addEventListener("change", function () {
      if (keep) { keep.setItem("karajo." + name, box.value); }
      applySort();
      applyFilter();
    });
  }
  const toggle = doc.getElementById("view-toggle");
  if (toggle) {
    setView(keep !== null && keep.getItem("karajo.view") === "table");
    toggle.addEventListener("click", function () {
      const table = toggle.getAttribute("aria-pressed") !== "true";
      if (keep) { keep.setItem("karajo.view", table ? "table" : "cards"); }
      setView(table);
    });
  }
  doc.addEventListener("keydown", function (ev) {
    const tag = (ev.target && ev.target.tagName) || "";
    if (ev.key === "/" && tag !== "INPUT" && tag !== "TEXTAREA" && tag !== "SELECT" &&
        !ev.ctrlKey && !ev.metaKey) {
      ev.preventDefault();
      input.focus();
    }
  });
  applySort();
  applyFilter();
}

// --- the job page's webhook and next fires -------------------------------------

function setupJobPage() {
  const curl = doc.getElementById("curl");
  if (curl) {
    setText(curl, curl.textContent.split("$KARAJO_URL").join(location.origin));
    const copy = doc.getElementById("copy-curl");
    if (copy) {
      copy.addEventListener("click", async function () {
        try {
          await window.navigator.clipboard.writeText(curl.textContent);
          toast("Copied: set SECRET before running it");
        } catch {
          const range = doc.createRange();
          range.selectNodeContents(curl);
          const sel = window.getSelection();
          sel.removeAllRanges();
          sel.addRange(range);
          toast("Selected: copy it with Ctrl+C");
        }
      });
    }
  }
  const tz = doc.getElementById("tz-name");
  if (tz) {
    let zone;
    try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch { zone = ""; }
    setText(tz, zone ? "(" + zone + ")" : "");
  }
}

// --- start -------------------------------------------------------------------

setupDialog();
setupActions();
setupJobPage();
let order = 0;
for (const card of doc.querySelectorAll(".card[data-id]")) {
  card.setAttribute("data-order", String(order++));
  cardIndex.set(card.getAttribute("data-table") + "/" + card.getAttribute("data-id"), card);
  readServerSpans(card);
  card.setAttribute("data-status",
    (card.querySelector('[data-field="status"]') || {}).textContent || "");
}
setupFilter();
schedulePoll(50);
doc.addEventListener("visibilitychange", function () {
  if (!doc.hidden) { pollSoon(); }
});
