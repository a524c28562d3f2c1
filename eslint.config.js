// ESLint for the dashboard's scripts (templates/static): `npx eslint templates/static`,
// run by .ci/run. The scripts put server data in the page as text only, and the
// Content-Security-Policy forbids inline script: nothing may parse a string as HTML
// or as code.
"use strict";

const js = require("@eslint/js");

const HTML_SINK = "puts a string in the page as HTML: build nodes and set textContent";
const CODE_SINK = "runs a string as code, which the CSP forbids";

const browser = {
  window: "readonly",
  document: "readonly",
  location: "readonly",
  fetch: "readonly",
  setTimeout: "readonly",
  clearTimeout: "readonly",
  setInterval: "readonly",
  TextEncoder: "readonly",
  TextDecoder: "readonly",
  EventSource: "readonly",
  URLSearchParams: "readonly",
  DataView: "readonly",
  atob: "readonly",
  unescape: "readonly",
  globalThis: "readonly",
};

module.exports = [
  {
    ignores: ["node_modules/**"],
  },
  js.configs.recommended,
  {
    files: ["templates/static/**/*.js"],
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: "module",
      globals: browser,
    },
    rules: {
      "no-var": "error",
      "prefer-const": "error",
      "no-eval": "error",
      "no-implied-eval": "error",
      "no-new-func": "error",
      "no-restricted-properties": [
        "error",
        { property: "innerHTML", message: HTML_SINK },
        { property: "outerHTML", message: HTML_SINK },
        { property: "insertAdjacentHTML", message: HTML_SINK },
        { property: "createContextualFragment", message: HTML_SINK },
        { object: "document", property: "write", message: HTML_SINK },
        { object: "document", property: "writeln", message: HTML_SINK },
        { object: "doc", property: "write", message: HTML_SINK },
        { object: "doc", property: "writeln", message: HTML_SINK },
      ],
      "no-restricted-syntax": [
        "error",
        {
          // el["innerHTML"], el[`outerHTML`] and the like
          selector: "MemberExpression[computed=true][property.value=/^(innerHTML|outerHTML|insertAdjacentHTML|write|writeln)$/]",
          message: HTML_SINK,
        },
        {
          // Object.assign(el, {innerHTML: ...})
          selector: "Property[key.name=/^(innerHTML|outerHTML)$/]",
          message: HTML_SINK,
        },
        {
          // any .write()/.writeln() call, whatever the document is called
          selector: "CallExpression[callee.property.name=/^(write|writeln)$/]",
          message: HTML_SINK,
        },
        {
          selector: "CallExpression[callee.name=/^(setTimeout|setInterval)$/][arguments.0.type='Literal']",
          message: CODE_SINK,
        },
      ],
    },
  },
  {
    // A classic script (it defines window.KarajoSHA256 for pages and for node).
    files: ["templates/static/sha256.js"],
    languageOptions: { sourceType: "script", globals: { ...browser, module: "readonly" } },
  },
];
