/*
 * A run's log page: while the run goes on, ask for the bytes after the
 * ones the page has (offset), never the whole log again, and stop once the
 * run is final.
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
  const decoder = new TextDecoder("utf-8");
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
  ui.logPolls = 0;

  async function step() {
    const r = await call("GET", base + "&offset=" + offset);
    ui.logPolls++;
    if (r.ok && r.data) {
      misses = 0;
      const bytes = b64bytes(r.data.content);
      const done = !!FINAL[r.data.status];
      if (bytes.length) {
        const text = decoder.decode(bytes, { stream: !done });
        if (text) { pre.appendChild(doc.createTextNode(text)); }
        offset += bytes.length;
        scroll();
      } else if (done) {
        const rest = decoder.decode();
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

setupLog();
