/*
 * A run's log page: while the run goes on, follow its events stream
 * (Server-Sent Events) from the bytes the page has (offset), never the
 * whole log again; the stream ends when the run is final.
 */

import {
  API, FINAL, apiOf, call, conn, doc, runTimes, setText, span, statusClass, ui, validID
} from "./common.js";

function b64bytes(text) {
  const bin = atob(text || "");
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) { out[i] = bin.charCodeAt(i); }
  return out;
}

function setupLog() {
  const box = doc.getElementById("log-page");
  const pre = doc.getElementById("log");
  if (!box || !pre) { return; }
  const api = apiOf(box);
  const id = box.getAttribute("data-id");
  const counter = Number(box.getAttribute("data-counter"));
  let offset = Number(box.getAttribute("data-offset")) || 0;
  let status = box.getAttribute("data-status");
  const follow = doc.getElementById("follow");
  const live = doc.getElementById("log-live");
  const statusNode = doc.getElementById("log-status");
  const size = doc.getElementById("log-size");
  let misses = 0;
  if (!validID(id) || !api) { return; }
  const base = API + "/" + api + "/log?id=" + encodeURIComponent(id) + "&counter=" + counter;

  function showSize(n) {
    setText(size, n < 10240 ? n + " bytes" : (n / 1024).toFixed(1) + " KiB");
  }

  /* The run ended: its duration, from the job's logs[] (when the server has the times). */
  async function finish() {
    setText(live, "");
    const r = await call("GET", API + "/" + api + "?id=" + encodeURIComponent(id));
    const logs = r.ok && r.data && Array.isArray(r.data.logs) ? r.data.logs : [];
    const entry = logs.find(function (l) { return l && l.counter === counter; });
    const times = runTimes(entry);
    if (times && times.end !== null) {
      setText(doc.getElementById("log-duration"), span(times.end - times.start));
    }
  }

  function scroll() {
    if (follow && follow.checked) { pre.scrollTop = pre.scrollHeight; }
  }

  showSize(offset);
  scroll();
  if (FINAL[status]) { return; }
  setText(live, "live");
  ui.logStreams = 0;
  ui.logEvents = 0;
  const encoder = new TextEncoder();
  let source = null;

  function show(newStatus) {
    status = String(newStatus);
    setText(statusNode, status);
    statusNode.className = "status " + statusClass(status);
    box.setAttribute("data-status", status);
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
      const text = new TextDecoder("utf-8").decode(bytes);
      if (text) { pre.appendChild(doc.createTextNode(text)); }
      offset += bytes.length;
      showSize(offset);
      show(r.data.status);
      scroll();
      finish();
      return;
    }
    misses++;
    conn(r.status === 0 ? "offline — retrying" : "update failed: " + (r.message || "stream lost"));
    setTimeout(open, Math.min(30000, 1000 * Math.pow(2, misses)));
  }

  /*
   * Follow the run's events stream from the bytes the page has: each "log"
   * event is text from a byte offset, "end" carries the final status.
   * The browser's own reconnect would start again at the first offset, so
   * a failed stream is closed and reopened here, at the offset reached.
   */
  function open() {
    source = new EventSource(API + "/" + api + "/events?id=" + encodeURIComponent(id) +
      "&counter=" + counter + "&offset=" + offset);
    ui.logStreams++;
    source.addEventListener("log", function (ev) {
      const data = JSON.parse(ev.data);
      if (!data || typeof data.text !== "string") { return; }
      misses = 0;
      conn("");
      ui.logEvents++;
      pre.appendChild(doc.createTextNode(data.text));
      /* Exact for UTF-8 text; after bytes that are not UTF-8 the next event's offset corrects it. */
      offset = Number(data.offset) + encoder.encode(data.text).length;
      showSize(offset);
      scroll();
    });
    source.addEventListener("end", function (ev) {
      source.close();
      source = null;
      const data = JSON.parse(ev.data);
      show(data && data.status ? data.status : "failed");
      finish();
    });
    source.addEventListener("error", function () {
      if (source) { lost(); }
    });
  }
  open();
}

setupLog();
