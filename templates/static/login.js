/*
 * The login page: log in through the API, then go where the server said
 * (the form's "next", which the server already limited to dashboard URLs).
 */

import { API, call, doc, setText } from "./common.js";

function setupLogin() {
  const form = doc.getElementById("login-form");
  if (!form) { return; }
  const error = doc.getElementById("login-error");
  form.addEventListener("submit", async function (ev) {
    ev.preventDefault();
    const button = form.querySelector('button[type="submit"]');
    button.disabled = true;
    setText(error, "");
    const body = new URLSearchParams();
    body.set("name", form.elements.name.value);
    body.set("password", form.elements.password.value);
    const r = await call("POST", API + "/auth/login", {
      body: body.toString(),
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      noLogin: true
    });
    button.disabled = false;
    if (r.ok) {
      location.assign(form.elements.next.value || "/karajo/app/");
      return;
    }
    setText(error, r.message || "Login failed.");
    form.elements.password.value = "";
    form.elements.password.focus();
  });
}

setupLogin();
