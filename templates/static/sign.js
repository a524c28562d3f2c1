/*
 * Management calls from the dashboard: pause, resume, cancel, run now.
 *
 * With users, the session's CSRF token goes along.  Without, the call is
 * signed in the browser with the global secret, which the page asks for
 * once per tab (kept in sessionStorage only): HMAC-SHA256 by WebCrypto
 * where the browser offers it, else by sha256.js (plain http on a LAN
 * address has no crypto.subtle).
 */

import { API, CSRF, CSRF_HEADER, USERS, call, doc, now, setText, storage, toast, ui } from "./common.js";

const SECRET_KEY = "karajo.secret";

function hexOf(buffer) {
  return window.KarajoSHA256.hex(new Uint8Array(buffer));
}

/* Hex HMAC-SHA256: WebCrypto where the browser has it, else sha256.js. */
async function hmacHex(secret, message) {
  const subtle = window.crypto && window.crypto.subtle;
  if (subtle && secret.length > 0) {
    try {
      const enc = new TextEncoder();
      const key = await subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-256" },
        false, ["sign"]);
      const sig = await subtle.sign("HMAC", key, enc.encode(message));
      ui.signer = "webcrypto";
      return hexOf(sig);
    } catch { /* fall back below */ }
  }
  ui.signer = "fallback";
  return window.KarajoSHA256.hmacHex(secret, message);
}
ui.hmacHex = hmacHex;

function storedSecret() {
  const s = storage();
  return s ? s.getItem(SECRET_KEY) : null;
}

function storeSecret(value) {
  const s = storage();
  if (s) { s.setItem(SECRET_KEY, value); }
  showForget();
}

/* Forget the secret, and any per-job secret an older page stored. */
function forgetSecret() {
  const s = storage();
  if (!s) { return; }
  for (let i = s.length - 1; i >= 0; i--) {
    const k = s.key(i);
    if (k && k.indexOf(SECRET_KEY) === 0) { s.removeItem(k); }
  }
  showForget();
}

function showForget() {
  const b = doc.getElementById("forget-secret");
  if (b) { b.hidden = !storedSecret(); }
}

let pendingAsk = null;

/* Ask for the secret in the dialog; resolves to the text or null. */
function askSecret(help) {
  const dialog = doc.getElementById("secret-dialog");
  if (!dialog || typeof dialog.showModal !== "function") {
    const typed = window.prompt(help);
    return Promise.resolve(typed ? typed : null);
  }
  if (pendingAsk) { pendingAsk(null); }
  setText(doc.getElementById("secret-help"), help);
  const input = doc.getElementById("secret-input");
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

export function setupDialog() {
  const dialog = doc.getElementById("secret-dialog");
  if (!dialog) { return; }
  doc.getElementById("secret-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    const value = doc.getElementById("secret-input").value;
    if (pendingAsk && value) { pendingAsk(value); }
  });
  doc.getElementById("secret-cancel").addEventListener("click", function () {
    if (pendingAsk) { pendingAsk(null); } else { dialog.close(); }
  });
  dialog.addEventListener("cancel", function () {
    if (pendingAsk) { pendingAsk(null); }
  });
  const forget = doc.getElementById("forget-secret");
  if (forget) {
    forget.addEventListener("click", function () {
      forgetSecret();
      toast("The secret is forgotten in this tab.");
    });
  }
  showForget();
}

async function globalSecret(help) {
  let s = storedSecret();
  if (s) { return s; }
  s = await askSecret(help || "This karajo has no users: actions are signed with the secret " +
    "from its configuration. It is kept in this browser tab only.");
  if (s) { storeSecret(s); }
  return s;
}

function epoch() {
  return Math.floor(now() / 1000);
}

/*
 * pause, resume, cancel or run_now of a job through the management API:
 * api is the job's API segment (job_exec signs its form body, job_http
 * its query string).
 */
export async function manage(api, action, id) {
  let help;
  for (let attempt = 0; attempt < 3; attempt++) {
    const params = "_karajo_epoch=" + epoch() + "&id=" + encodeURIComponent(id);
    let path = API + "/" + api + "/" + action;
    const headers = {};
    let body;
    if (api === "job_http") {
      path += "?" + params;
    } else {
      body = params;
      headers["Content-Type"] = "application/x-www-form-urlencoded";
    }
    if (USERS) {
      headers[CSRF_HEADER] = CSRF;
    } else {
      const secret = await globalSecret(help);
      if (!secret) { return { ok: false, message: "Nothing sent: no secret given." }; }
      headers["X-Karajo-Sign"] = await hmacHex(secret, params);
    }
    const r = await call("POST", path, { headers: headers, body: body });
    if (!USERS && r.status === 401) {
      forgetSecret();
      help = "karajo refused that secret (" + r.message + "). Enter the secret again.";
      continue;
    }
    return r;
  }
  return { ok: false, message: "The secret was refused." };
}
