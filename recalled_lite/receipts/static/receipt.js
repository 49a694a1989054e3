// Verifies the receipt on this page: leaf -> inclusion proof -> checkpoint root -> Ed25519
// signature of the checkpoint, with WebCrypto only. Reads what the page shows (nothing else is
// fetched), so what is checked is exactly what the reader sees. Algorithms: RFC 9162 §2.1.3.2,
// C2SP signed-note and tlog-checkpoint; the leaf is SHA-256(0x00 || hash "\n" signature).
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const text = (id) => $(id).textContent;
  const encoder = new TextEncoder();

  function bytesOf(...parts) {
    const size = parts.reduce((n, p) => n + p.length, 0);
    const out = new Uint8Array(size);
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.length; }
    return out;
  }
  function fromBase64(value) {
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(value) || value.length % 4) throw new Error("not base64: " + value);
    return Uint8Array.from(atob(value), (c) => c.charCodeAt(0));
  }
  function same(a, b) { return a.length === b.length && a.every((x, i) => x === b[i]); }
  async function sha256(data) { return new Uint8Array(await crypto.subtle.digest("SHA-256", data)); }
  const half = (n) => Math.floor(n / 2);
  const odd = (n) => n % 2 === 1;

  // RFC 9162 §2.1.3.2: the root an inclusion proof leads to, or null.
  async function rootFromProof(index, size, leaf, proof) {
    if (!(index < size)) return null;
    let fn = index, sn = size - 1, r = leaf;
    for (const p of proof) {
      if (p.length !== 32 || sn === 0) return null;
      if (odd(fn) || fn === sn) {
        r = await sha256(bytesOf([1], p, r));
        if (!odd(fn)) { while (fn !== 0 && !odd(fn)) { fn = half(fn); sn = half(sn); } }
      } else {
        r = await sha256(bytesOf([1], r, p));
      }
      fn = half(fn); sn = half(sn);
    }
    return sn === 0 ? r : null;
  }

  function parseNote(note) {
    const split = note.lastIndexOf("\n\n");
    if (split < 0 || !note.endsWith("\n")) throw new Error("the checkpoint is not a signed note");
    const body = note.slice(0, split + 1);
    const signatures = note.slice(split + 2, -1).split("\n").map((line) => {
      if (!line.startsWith("\u2014 ")) throw new Error("malformed signature line");
      const [name, data] = line.slice(2).split(" ");
      return { name, blob: fromBase64(data) };
    });
    const lines = body.slice(0, -1).split("\n");
    if (lines.length < 3 || !/^(0|[1-9][0-9]*)$/.test(lines[1])) throw new Error("malformed checkpoint");
    return { body, origin: lines[0], size: Number(lines[1]), root: fromBase64(lines[2]), signatures };
  }

  async function checkSignature(checkpoint, vkey) {
    const first = vkey.indexOf("+"), second = vkey.indexOf("+", first + 1);
    if (first < 0 || second < 0) return { ok: false, why: "the verifier key is malformed" };
    const name = vkey.slice(0, first), keyId = vkey.slice(first + 1, second);
    const key = fromBase64(vkey.slice(second + 1));
    if (key.length !== 33 || key[0] !== 1) return { ok: false, why: "the verifier key is not an Ed25519 key" };
    const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    const line = checkpoint.signatures.find((s) => s.name === name && hex(s.blob.slice(0, 4)) === keyId);
    if (!line) return { ok: false, why: "the checkpoint carries no signature by this key" };
    let imported;
    try {
      imported = await crypto.subtle.importKey("raw", key.slice(1), { name: "Ed25519" }, false, ["verify"]);
    } catch (e) {
      return { ok: null, why: "this browser cannot check Ed25519 signatures" };
    }
    const ok = await crypto.subtle.verify({ name: "Ed25519" }, imported, line.blob.slice(4), encoder.encode(checkpoint.body));
    return { ok, why: ok ? "" : "the signature does not match the checkpoint" };
  }

  function report(ok, message) {
    const li = document.createElement("li");
    li.className = ok ? "ok" : "bad";
    li.textContent = (ok ? "\u2713 " : "\u2717 ") + message;
    $("checks").appendChild(li);
  }
  function finish(state, message) {
    const status = $("status");
    status.dataset.state = state;
    status.textContent = message;
  }

  async function verify() {
    if (!window.crypto || !crypto.subtle) {
      finish("unavailable", "Cannot verify here: browsers offer WebCrypto only on https pages (and localhost).");
      return;
    }
    try {
      const index = Number(text("leaf-index")), size = Number(text("tree-size"));
      const leaf = await sha256(bytesOf([0], encoder.encode(text("event-hash").trim() + "\n" + text("event-signature").trim())));
      const leafOk = same(leaf, fromBase64(text("leaf-hash").trim()));
      report(leafOk, leafOk ? "the leaf hash is the event's hash and signature" : "the leaf hash does not match the event");
      const proof = Array.from(document.querySelectorAll("#proof code"), (c) => fromBase64(c.textContent.trim()));
      const root = await rootFromProof(index, size, leaf, proof);
      const checkpoint = parseNote(text("checkpoint"));
      const rootOk = root !== null && checkpoint.size === size && same(root, checkpoint.root);
      report(rootOk, rootOk ? `the inclusion proof leads to the root of the checkpoint (tree size ${size})`
                            : "the inclusion proof does not lead to the checkpoint's root");
      const signature = await checkSignature(checkpoint, text("verifier-key").trim());
      if (signature.ok === null) report(false, signature.why);
      else report(signature.ok, signature.ok ? "the checkpoint is signed by the key shown" : signature.why);
      if (leafOk && rootOk && signature.ok) finish("verified", "Verified: this event is in the signed log.");
      else if (leafOk && rootOk && signature.ok === null) finish("proof-only", "The proof holds, but this browser could not check the checkpoint's signature.");
      else finish("failed", "Not verified: the proof or the checkpoint does not hold.");
    } catch (e) {
      finish("failed", "Not verified: " + e.message);
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", verify);
  else verify();
})();
