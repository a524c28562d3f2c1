/*
 * A run's page: its facts as the server rendered them, and its log.
 * While the run goes on, the log follows the run's events stream
 * (Server-Sent Events) from the bytes the page has (offset), never the
 * whole log again, and the elapsed time ticks (common.js, <time class=
 * "elapsed">).  At the stream's "end" event the page shows the final
 * status, end time and duration, and stops: nothing is polled.
 */

import {
  API, FINAL, apiOf, call, conn, doc, runTimes, serverTime, setText, span, statusClass,
  tick, ui, validID
} from "./common.js";

function b64bytes(text) {
  const bin = atob(text || "");
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) { out[i] = bin.charCodeAt(i); }
  return out;
}

function showSize(node, n) {
  setText(node, n < 10240 ? n + " bytes" : (n / 1024).toFixed(1) + " KiB");
}

function setupRun() {
  const box = doc.getElementById("run-page");
  const pre = doc.getElementById("log");
  if (!box || !pre) { return; }
  const api = apiOf(box);
  const id = box.getAttribute("data-id");
  const counter = Number(box.getAttribute("data-counter"));
  let offset = Number(box.getAttribute("data-offset")) || 0;
  const follow = doc.getElementById("follow");
  const live = doc.getElementById("log-live");
  const statusNode = doc.getElementById("run-status");
  const size = doc.getElementById("log-size");
  let misses = 0;
  serverTime(Number(box.getAttribute("data-now")));
  if (!validID(id) || !api) { return; }
  const base = API + "/" + api + "/log?id=" + encodeURIComponent(id) + "&counter=" + counter;

  function scroll() {
    if (follow && follow.checked) { pre.scrollTop = pre.scrollHeight; }
  }

  if (FINAL[box.getAttribute("data-status")]) {
    pre.scrollTop = pre.scrollHeight; // a finished log opens at its end, where it says how it ended
    return;
  }
  scroll();
  setText(live, "live");
  ui.logStreams = 0;
  ui.logEvents = 0;
  const encoder = new TextEncoder();
  let source = null;

  function append(text) {
    if (text) { pre.appendChild(doc.createTextNode(text)); }
  }

  /*
   * The run ended with this status: the badge, then its end and duration
   * from the job's logs[] (the server's own times), in one request.
   */
  async function finish(status) {
    status = String(status);
    setText(statusNode, status);
    statusNode.className = "status " + statusClass(status);
    box.setAttribute("data-status", status);
    setText(live, "");
    const r = await call("GET", API + "/" + api + "?id=" + encodeURIComponent(id));
    const logs = r.ok && r.data && Array.isArray(r.data.logs) ? r.data.logs : [];
    const times = runTimes(logs.find(function (l) { return l && l.counter === counter; }));
    const duration = doc.getElementById("run-duration");
    const end = doc.querySelector('#run-end [data-field="end"]');
    if (times && times.end !== null) {
      if (end) { end.setAttribute("datetime", new Date(times.end * 1000).toISOString()); }
      setText(duration, span(times.end - times.start));
    } else {
      if (end) { setText(end, "—"); }
      setText(duration, "—");
    }
    tick();
    ui.finished = true;
  }

  /* The stream failed: is the log gone (404), or is the server away for now? */
  async function lost() {
    if (source) { source.close(); source = null; }
    const r = await call("GET", base + "&offset=" + offset);
    if (r.status === 404) {
      setText(live, "this log is gone");
      return;
    }
    if (r.ok && r.data && FINAL[r.data.status]) {
      /* It ended while the stream was down: the rest comes in one piece. */
      const bytes = b64bytes(r.data.content);
      append(new TextDecoder("utf-8").decode(bytes));
      offset += bytes.length;
      showSize(size, offset);
      scroll();
      conn("");
      finish(r.data.status);
      return;
    }
    misses++;
    conn(r.status === 0 ? "offline — retrying" : "connection lost — reconnecting");
    setTimeout(open, Math.min(30000, 500 * Math.pow(2, misses)));
  }

  /*
   * Follow the run's events stream from the bytes the page has: each "log"
   * event is text from a byte offset, "end" carries the final status.
   * The browser's own reconnect would start again at the first offset, so
   * a failed stream is closed and reopened here, at the offset reached:
   * an event is only handled once complete, so what the page shows is
   * always exactly the log's bytes up to that offset.
   */
  function open() {
    source = new EventSource(API + "/" + api + "/events?id=" + encodeURIComponent(id) +
      "&counter=" + counter + "&offset=" + offset);
    ui.logStreams++;
    source.addEventListener("open", function () {
      if (misses) {
        misses = 0;
        conn("");
      }
    });
    source.addEventListener("log", function (ev) {
      const data = JSON.parse(ev.data);
      if (!data || typeof data.text !== "string") { return; }
      ui.logEvents++;
      append(data.text);
      /* Exact for UTF-8 text; after bytes that are not UTF-8 the next event's offset corrects it. */
      offset = Number(data.offset) + encoder.encode(data.text).length;
      showSize(size, offset);
      scroll();
    });
    source.addEventListener("end", function (ev) {
      source.close();
      source = null;
      conn("");
      const data = JSON.parse(ev.data);
      finish(data && data.status ? data.status : "failed");
    });
    source.addEventListener("error", function () {
      if (source) { lost(); }
    });
  }
  open();
}

setupRun();
