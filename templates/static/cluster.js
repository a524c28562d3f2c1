/*
 * The cluster view of a cluster node: the page /karajo/app/cluster (this
 * module is its script: it polls the environment) and the dashboard's
 * cluster panel (dashboard.js hands it each environment it polls).  Both
 * are rebuilt from the environment's "cluster" as karajo/web/clusterpage.py
 * renders them: every node alive or dead, its heartbeat's age (a <time>
 * common.js ticks), the runs going on there, its version and digest, and
 * a warning naming the alive nodes of another configuration.
 */

import {
  API, PAGE, call, clear, conn, doc, el, runHref, serverTime, setText, tick, ui, validID
} from "./common.js";

function plural(n, word) { return n + " " + word + (n === 1 ? "" : "s"); }

/* The kind of each job map of the environment ("jobs:job ..."), from the server. */
function kindsOf(box) {
  const out = {};
  for (const pair of (box.getAttribute("data-tables") || "").split(" ")) {
    const [table, kind] = pair.split(":");
    if (table && kind) { out[table] = kind; }
  }
  return out;
}

/* The runs going on, by node: [{name, href}], by job then counter. */
function runningByNode(box, data) {
  const out = {};
  const kinds = kindsOf(box);
  for (const table of Object.keys(kinds)) {
    const jobs = data[table];
    if (!jobs || typeof jobs !== "object") { continue; }
    for (const job of Object.values(jobs)) {
      if (!job || !validID(job.id) || !Array.isArray(job.logs)) { continue; }
      for (const l of job.logs) {
        if (l && l.status === "running" && typeof l.node === "string" && l.node) {
          (out[l.node] = out[l.node] || []).push({
            name: String(job.name) + " #" + Number(l.counter),
            href: runHref(kinds[table], job.id, l.counter)
          });
        }
      }
    }
  }
  return out;
}

function summary(nodes) {
  const alive = nodes.filter(function (n) { return n.alive; }).length;
  return plural(nodes.length, "node") + ": " + alive + " alive, " + (nodes.length - alive) + " dead";
}

function warning(id, title, text) {
  const p = el("p", { id: id, "class": "warn" });
  p.appendChild(el("strong", null, title));
  p.appendChild(doc.createTextNode(text));
  return p;
}

function updateWarnings(box, cluster, me) {
  const holder = box.querySelector("#cluster-problems");
  const mismatch = Array.isArray(cluster.config_mismatch) ? cluster.config_mismatch.map(String) : [];
  const signature = mismatch.join(" ") + "|" + Boolean(cluster.connected);
  if (!holder || holder.getAttribute("data-sig") === signature) { return; }
  holder.setAttribute("data-sig", signature);
  clear(holder);
  if (mismatch.length) {
    const p = warning("cluster-warning", "Configuration differs: ",
      "nodes started from another configuration than this node (" + me + "): " +
      mismatch.join(", ") + ". Start every node from the same files.");
    p.setAttribute("data-nodes", mismatch.join(" "));
    holder.appendChild(p);
  }
  if (!cluster.connected) {
    holder.appendChild(warning("cluster-offline", "Database unreachable: ",
      "Node " + me + " cannot reach the cluster database: no scheduled run starts here, " +
      "triggers are answered 503 until it is back. What this page shows may be out of date."));
  }
}

function nodeRow(n, me, differs, runs, shown) {
  const state = n.alive ? "alive" : "dead";
  const tr = el("tr", {
    "class": "node" + (n.name === me ? " me" : "") + (n.alive ? "" : " dead"), "data-node": n.name
  });
  const th = el("th", { scope: "row" });
  th.appendChild(el("span", { "class": "node-name" }, n.name));
  if (n.name === me) {
    th.appendChild(doc.createTextNode(" "));
    th.appendChild(el("span", { "class": "me-badge" }, "this node"));
  }
  tr.appendChild(th);
  const st = el("td", { "data-field": "state" });
  st.appendChild(el("span", { "class": "status st-" + state }, state));
  tr.appendChild(st);
  const beat = el("td", { "data-field": "heartbeat" });
  beat.appendChild(el("time", { "data-field": "last_seen", "class": "rel", datetime: n.last_seen }));
  tr.appendChild(beat);
  const running = el("td", { "data-field": "running" });
  running.appendChild(el("span", { "class": "count" }, String(runs.length)));
  running.appendChild(doc.createTextNode(" "));
  if (runs.length) {
    const ul = el("ul", { "class": "runs node-runs" });
    for (const r of runs) {
      const li = el("li");
      li.appendChild(el("a", { href: r.href, "class": "run st-running" }, r.name));
      ul.appendChild(li);
    }
    running.appendChild(ul);
  } else {
    running.appendChild(el("span", { "class": "none" }, "none"));
  }
  tr.appendChild(running);
  tr.appendChild(el("td", { "data-field": "version" }, n.version));
  const digest = el("td", { "data-field": "digest" });
  digest.appendChild(el("code", { title: n.config_digest }, n.config_digest.slice(0, shown)));
  if (differs) {
    digest.appendChild(doc.createTextNode(" "));
    digest.appendChild(el("span", { "class": "differs" }, "differs"));
  }
  tr.appendChild(digest);
  return tr;
}

function updateRows(box, cluster, nodes, me, data) {
  const body = box.querySelector("#node-rows");
  if (!body) { return; }
  const mismatch = new Set(Array.isArray(cluster.config_mismatch) ? cluster.config_mismatch : []);
  const running = runningByNode(box, data);
  const shown = Number(box.getAttribute("data-digest-shown")) || 12;
  const rows = nodes.map(function (n) {
    return [n, mismatch.has(n.name), running[n.name] || []];
  });
  const signature = JSON.stringify(rows.map(function (r) {
    return [r[0].name, r[0].alive, r[0].version, r[0].config_digest, r[1], r[2]];
  }));
  if (body.getAttribute("data-sig") !== signature) {
    body.setAttribute("data-sig", signature);
    clear(body);
    for (const [n, differs, runs] of rows) { body.appendChild(nodeRow(n, me, differs, runs, shown)); }
  }
  const seen = new Map(nodes.map(function (n) { return [n.name, n.last_seen]; }));
  for (const tr of body.querySelectorAll("tr[data-node]")) {
    const t = tr.querySelector("time");
    const when = seen.get(tr.getAttribute("data-node"));
    if (t && when !== undefined) { t.setAttribute("datetime", when); }
  }
}

function updateDead(box, nodes) {
  const list = box.querySelector("#dead-nodes");
  if (!list) { return; }
  const dead = nodes.filter(function (n) { return !n.alive; }).map(function (n) { return n.name; });
  const signature = dead.join(" ");
  if (list.getAttribute("data-sig") === signature) { return; }
  list.setAttribute("data-sig", signature);
  clear(list);
  for (const name of dead) {
    const li = el("li", { "data-node": name });
    li.appendChild(el("span", { "class": "status st-dead" }, "dead"));
    li.appendChild(doc.createTextNode(" " + name));
    list.appendChild(li);
  }
}

/* Show the environment's "cluster" (data: the environment) on the page or panel. */
export function updateCluster(data) {
  const box = doc.getElementById("cluster");
  const cluster = data && data.cluster;
  if (!box || !cluster || typeof cluster !== "object" || !Array.isArray(cluster.nodes)) { return; }
  const me = box.getAttribute("data-me") || "";
  const nodes = cluster.nodes.filter(function (n) {
    return n && typeof n.name === "string";
  }).map(function (n) {
    return {
      name: n.name, alive: Boolean(n.alive), last_seen: String(n.last_seen || ""),
      version: String(n.version || ""), config_digest: String(n.config_digest || "")
    };
  });
  setText(box.querySelector("#cluster-summary"), summary(nodes));
  updateWarnings(box, cluster, me);
  updateRows(box, cluster, nodes, me, data);
  updateDead(box, nodes);
  tick();
}

// --- the cluster page polls the environment itself --------------------------------

let failures = 0;

async function poll() {
  const r = await call("GET", API + "/environment");
  if (r.ok && r.data) {
    updateCluster(r.data);
    conn("");
    failures = 0;
  } else {
    conn(r.status === 0 ? "offline — retrying" : "update failed: " + r.message);
    failures++;
  }
  ui.polls++;
  let delay = doc.hidden ? 15000 : 2000;
  if (failures) { delay = Math.min(30000, 2000 * Math.pow(2, failures - 1)); }
  setTimeout(poll, delay);
}

if (PAGE === "cluster") {
  const box = doc.getElementById("cluster");
  if (box) {
    serverTime(Number(box.getAttribute("data-now")));
    setTimeout(poll, 50);
  }
}
