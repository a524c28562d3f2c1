/*
 * SHA-256 and HMAC-SHA256 in plain JavaScript (FIPS 180-4, RFC 2104).
 *
 * Browsers only offer crypto.subtle on secure origins (https, localhost):
 * a dashboard opened over plain http on another address has none, so the
 * page signs with this instead.  Checked against the FIPS and RFC 4231
 * vectors by tests/test_ui.py (node) and tests/e2e/test_ui.py (browser).
 */
(function (root) {
  "use strict";

  const K = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
  ];

  function utf8(text) {
    if (typeof TextEncoder !== "undefined") {
      return new TextEncoder().encode(text);
    }
    const s = unescape(encodeURIComponent(text));
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) {
      out[i] = s.charCodeAt(i);
    }
    return out;
  }

  function bytes(value) {
    return typeof value === "string" ? utf8(value) : new Uint8Array(value);
  }

  /* The SHA-256 digest (32 bytes) of a string (UTF-8) or byte array. */
  function sha256(message) {
    const data = bytes(message);
    const bitLength = data.length * 8;
    const padded = new Uint8Array(((data.length + 9 + 63) >> 6) << 6);
    padded.set(data);
    padded[data.length] = 0x80;
    const view = new DataView(padded.buffer);
    // Lengths beyond 2^32 bits do not occur here, but write both words.
    view.setUint32(padded.length - 8, Math.floor(bitLength / 0x100000000));
    view.setUint32(padded.length - 4, bitLength >>> 0);

    let h0 = 0x6a09e667, h1 = 0xbb67ae85, h2 = 0x3c6ef372, h3 = 0xa54ff53a;
    let h4 = 0x510e527f, h5 = 0x9b05688c, h6 = 0x1f83d9ab, h7 = 0x5be0cd19;
    const w = new Int32Array(64);

    for (let offset = 0; offset < padded.length; offset += 64) {
      let i;
      for (i = 0; i < 16; i++) {
        w[i] = view.getInt32(offset + i * 4);
      }
      for (i = 16; i < 64; i++) {
        const x = w[i - 15], y = w[i - 2];
        const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
        const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
        w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
      }
      let a = h0, b = h1, c = h2, d = h3, e = h4, f = h5, g = h6, h = h7;
      for (i = 0; i < 64; i++) {
        const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
        const ch = (e & f) ^ (~e & g);
        const t1 = (h + S1 + ch + K[i] + w[i]) | 0;
        const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
        const maj = (a & b) ^ (a & c) ^ (b & c);
        const t2 = (S0 + maj) | 0;
        h = g; g = f; f = e; e = (d + t1) | 0;
        d = c; c = b; b = a; a = (t1 + t2) | 0;
      }
      h0 = (h0 + a) | 0; h1 = (h1 + b) | 0; h2 = (h2 + c) | 0; h3 = (h3 + d) | 0;
      h4 = (h4 + e) | 0; h5 = (h5 + f) | 0; h6 = (h6 + g) | 0; h7 = (h7 + h) | 0;
    }
    const out = new Uint8Array(32);
    const outView = new DataView(out.buffer);
    [h0, h1, h2, h3, h4, h5, h6, h7].forEach(function (v, j) {
      outView.setInt32(j * 4, v);
    });
    return out;
  }

  /* HMAC-SHA256 (32 bytes) of a message with a key (strings are UTF-8). */
  function hmac(key, message) {
    let k = bytes(key);
    if (k.length > 64) {
      k = sha256(k);
    }
    const block = new Uint8Array(64);
    block.set(k);
    const inner = new Uint8Array(64), outer = new Uint8Array(64 + 32);
    for (let i = 0; i < 64; i++) {
      inner[i] = block[i] ^ 0x36;
      outer[i] = block[i] ^ 0x5c;
    }
    const msg = bytes(message);
    const innerData = new Uint8Array(64 + msg.length);
    innerData.set(inner);
    innerData.set(msg, 64);
    outer.set(sha256(innerData), 64);
    return sha256(outer);
  }

  function hex(digest) {
    let out = "";
    for (let i = 0; i < digest.length; i++) {
      out += (digest[i] < 16 ? "0" : "") + digest[i].toString(16);
    }
    return out;
  }

  const api = {
    sha256: sha256,
    hmac: hmac,
    hex: hex,
    utf8: utf8,
    hmacHex: function (key, message) { return hex(hmac(key, message)); },
    sha256Hex: function (message) { return hex(sha256(message)); }
  };
  root.KarajoSHA256 = api;
  if (typeof module !== "undefined" && module.exports) {
    module.exports = api;
  }
})(typeof globalThis !== "undefined" ? globalThis : this);
