/*
 * karajo pages: what every page's script shares (helpers, time, the API).
 *
 * The pages are complete as the server renders them; the scripts keep
 * them live.  Rules every script here keeps (eslint.config.js checks them):
 *  - data from the server is only ever put in the page as text
 *    (textContent, createTextNode, setAttribute of plain attributes);
 *    never HTML, never a URL built from anything but IDs and numbers;
 *  - no inline script or style (the Content-Security-Policy forbids them);
 *  - what the server knows (API paths per kind, chart geometry, how many
 *    runs a card lists) is read from the page's data-* attributes, never
 *    copied here.
 *
 * Each page loads one module (dashboard.js, run.js, login.js, cluster.js,
 * or this one alone), which imports this file.
 */

export const doc = document;
export const API = "/karajo/api";
export const FINAL = { success: true, failed: true, canceled: true };
const ZERO = "0001-01-01T00:00:00Z";
const SVG_NS = "http://www.w3.org/2000/svg";

export function meta(name) {
  const m = doc.querySelector('meta[name="' + name + '"]');
  return m ? m.getAttribute("content") || "" : "";
}

export const USERS = meta("karajo-users") === "1";
export const CSRF = meta("karajo-csrf");
export const CSRF_HEADER = meta("karajo-csrf-header") || "X-Karajo-CSRF";
export const PAGE = doc.body ? doc.body.getAttribute("data-page") : "";

/* Server clock minus browser clock (ms), from the Date of API answers. */
let skew = 0;

/* What the browser tests watch (polls, the signer used). */
export const ui = { signer: "", polls: 0 };
window.KarajoUI = ui;

// --- small DOM helpers -------------------------------------------------------

export function el(tag, attrs, text) {
  const node = doc.createElement(tag);
  if (attrs) {
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
  }
  if (text !== undefined && text !== null) {
    node.textContent = String(text);
  }
  return node;
}

export function svg(tag, attrs) {
  const node = doc.createElementNS(SVG_NS, tag);
  Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
  return node;
}

export function clear(node) {
  while (node.firstChild) {
    node.removeChild(node.firstChild);
  }
}

export function setText(node, text) {
  if (node && node.textContent !== text) {
    node.textContent = text;
  }
}

let toastTimer = null;

export function toast(message, isError) {
  const t = doc.getElementById("toast");
  if (!t) { return; }
  t.textContent = message;
  t.className = "toast show" + (isError ? " error" : "");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(function () { t.className = "toast"; }, 5000);
}

export function conn(message) {
  const c = doc.getElementById("conn");
  if (c) {
    setText(c, message);
    c.className = message ? "conn down" : "conn";
  }
}

export function statusClass(status) {
  return "st-" + String(status).replace(/[^a-z_-]/g, "");
}

export function validID(id) {
  return typeof id === "string" && /^[a-z0-9_-]{1,200}$/.test(id);
}

/* The page of a run. */
export function runHref(kind, id, counter) {
  return "/karajo/app/run?kind=" + encodeURIComponent(kind) +
    "&id=" + encodeURIComponent(id) + "&counter=" + Number(counter);
}

/* The API path segment of a card's or log page's job (data-api, from the server). */
export function apiOf(node) {
  const api = node.getAttribute("data-api") || "";
  return /^[a-z_]{1,40}$/.test(api) ? api : "";
}

export function storage() {
  try { return window.sessionStorage; } catch { return null; }
}

// --- time --------------------------------------------------------------------

function pad(n) { return (n < 10 ? "0" : "") + n; }

/* Milliseconds of an RFC 3339 time from the API; null for never or nonsense. */
export function parseTime(text) {
  if (!text || text === ZERO) { return null; }
  const t = Date.parse(text);
  return isNaN(t) ? null : t;
}

export function localTime(ms) {
  const d = new Date(ms);
  return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
    pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
}

export function span(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s >= 86400) { return Math.floor(s / 86400) + "d " + pad(Math.floor(s % 86400 / 3600)) + "h"; }
  if (s >= 3600) { return Math.floor(s / 3600) + "h " + pad(Math.floor(s % 3600 / 60)) + "m " + pad(s % 60) + "s"; }
  if (s >= 60) { return Math.floor(s / 60) + "m " + pad(s % 60) + "s"; }
  return s + "s";
}

export function now() { return Date.now() + skew; }

/*
 * The server's clock read at about this moment (ms): from an API answer's
 * Date, or a page's data-now.  A difference within 1.5 s is taken for the
 * page's own transit time and ignored.
 */
export function serverTime(ms) {
  if (!isFinite(ms) || ms <= 0) { return; }
  skew = ms - Date.now();
  if (Math.abs(skew) < 1500) { skew = 0; }
}

/*
 * A run's start and end (seconds) from its logs[] entry of the API, when
 * the server sent them (started/ended); null otherwise.
 */
export function runTimes(log) {
  const start = parseTime(log && log.started);
  if (start === null) { return null; }
  const end = parseTime(log.ended);
  return { start: start / 1000, end: end === null ? null : end / 1000 };
}

/*
 * Fill every <time>: last runs as local time + "ago", next runs as
 * countdowns, a running run's elapsed time since its start.
 */
export function tick() {
  const times = doc.querySelectorAll("time[datetime]");
  for (const node of times) {
    const t = parseTime(node.getAttribute("datetime"));
    let text;
    if (node.classList.contains("countdown")) {
      if (node.getAttribute("data-paused") === "1") {
        text = "paused";
      } else if (t === null) {
        text = "not scheduled";
      } else {
        const left = (t - now()) / 1000;
        text = left > 0.5 ? "in " + span(left) : "due now";
        node.title = localTime(t);
      }
    } else if (t === null) {
      text = "never";
    } else if (node.classList.contains("elapsed")) {
      text = span((now() - t) / 1000);
    } else if (node.classList.contains("rel")) {
      text = span((now() - t) / 1000) + " ago";
      node.title = localTime(t);
    } else {
      text = localTime(t);
    }
    setText(node, text);
  }
}

// --- HTTP --------------------------------------------------------------------

function goLogin() {
  location.assign("/karajo/?next=" + encodeURIComponent(location.pathname + location.search));
}

/* One API call; never throws: {ok, status, data, name, message}. */
export async function call(method, path, opts) {
  opts = opts || {};
  let res;
  try {
    res = await fetch(path, {
      method: method,
      headers: opts.headers || {},
      body: opts.body,
      credentials: "same-origin",
      cache: "no-store"
    });
  } catch {
    return { ok: false, status: 0, name: "ERR_NETWORK", message: "cannot reach karajo" };
  }
  const date = Date.parse(res.headers.get("Date") || "");
  if (!isNaN(date)) {
    // Date has whole seconds: the server's clock is within [date, date+1s).
    serverTime(date + 500);
  }
  let body;
  try { body = await res.json(); } catch { body = null; }
  const result = {
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

// --- every page --------------------------------------------------------------

function setupLogout() {
  const logout = doc.getElementById("logout");
  if (logout) {
    logout.addEventListener("click", async function () {
      const headers = {};
      headers[CSRF_HEADER] = CSRF;
      await call("POST", API + "/auth/logout", { headers: headers, noLogin: true });
      location.assign("/karajo/");
    });
  }
}

setupLogout();
tick();
setInterval(tick, 1000);
