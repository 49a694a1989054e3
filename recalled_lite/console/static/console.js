// recalled-lite console: the few things a server-rendered page cannot do by itself.
// Everything works without this script except the live tail, live progress and the
// local-time toggle. No inline handlers: the CSP allows only this file.
"use strict";

(function () {
  const TZ_KEY = "recalled.console.times"; // a display preference only; never a key or a token

  // -- UTC / local time ------------------------------------------------------------------
  const pad = (n) => String(n).padStart(2, "0");
  const zoneName = (() => {
    try { return Intl.DateTimeFormat().resolvedOptions().timeZone || "local"; } catch (e) { return "local"; }
  })();

  function showTimes(root, local) {
    root.querySelectorAll("time.ts").forEach((el) => {
      const iso = el.getAttribute("datetime");
      if (!el.dataset.utc) el.dataset.utc = el.textContent;
      if (!local) { el.textContent = el.dataset.utc; return; }
      const d = new Date(iso);
      if (isNaN(d)) return;
      el.textContent = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
        `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    });
  }

  function localTimes() { try { return localStorage.getItem(TZ_KEY) === "local"; } catch (e) { return false; } }

  function setupTimeToggle() {
    const button = document.querySelector("[data-tz-toggle]");
    const apply = () => {
      const local = localTimes();
      showTimes(document, local);
      if (button) {
        button.textContent = local ? `Times: local (${zoneName})` : "Times: UTC";
        button.setAttribute("aria-pressed", String(local));
      }
    };
    if (button) {
      button.hidden = false;
      button.addEventListener("click", () => {
        try { localStorage.setItem(TZ_KEY, localTimes() ? "utc" : "local"); } catch (e) { /* private mode */ }
        apply();
      });
    }
    apply();
  }

  // -- live tail ---------------------------------------------------------------------------
  function setupTail() {
    const box = document.querySelector("[data-tail-url]");
    if (!box) return;
    const body = document.getElementById(box.dataset.tailBody);
    const status = box.querySelector("[data-tail-status]");
    const toggle = box.querySelector("[data-tail-toggle]");
    let after = box.dataset.tailAfter;
    let paused = false;
    let stopped = false;
    let timer = null;
    let seen = 0;

    const say = (text) => { status.textContent = text; };
    const schedule = (ms) => { clearTimeout(timer); if (!paused && !stopped) timer = setTimeout(poll, ms); };

    function insert(html) {
      const holder = document.createElement("tbody");
      holder.innerHTML = html; // server-rendered, escaped by the template engine
      const rows = Array.from(holder.children);
      const empty = body.querySelector("tr.empty");
      if (empty && rows.length) empty.remove();
      rows.reverse().forEach((row) => {
        row.classList.add("fresh");
        body.insertBefore(row, body.firstChild);
      });
      showTimes(body, localTimes());
      const keep = parseInt(box.dataset.tailKeep, 10) || 250; // a long tail must not slow the page
      while (body.children.length > keep) body.removeChild(body.lastChild);
    }

    async function poll() {
      const url = box.dataset.tailUrl + (box.dataset.tailUrl.includes("?") ? "&" : "?") +
        "after_seq=" + encodeURIComponent(after);
      try {
        const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
        const answer = await response.json();
        if (!response.ok) {
          stopped = true;
          box.classList.add("stopped");
          say(response.status === 401
            ? "The live tail stopped: your session has ended. Reload the page to sign in again."
            : "The live tail stopped: " + ((answer.error && answer.error.message) || "the server refused") + ".");
          return;
        }
        if (answer.count) {
          insert(answer.html);
          seen += answer.count;
          after = String(answer.lastSeq);
          say(`Live: ${seen} new ${seen === 1 ? "event" : "events"} since the page opened.`);
        }
        schedule(answer.more ? 0 : 1000);
      } catch (e) {
        say("Live: the server did not answer; trying again.");
        schedule(3000);
      }
    }

    toggle.addEventListener("click", () => {
      paused = !paused;
      toggle.textContent = paused ? "Resume" : "Pause";
      toggle.setAttribute("aria-pressed", String(paused));
      box.classList.toggle("paused", paused);
      if (paused) { clearTimeout(timer); say("Paused: new events are not shown until you resume."); }
      else { say("Live: new events appear at the top."); schedule(0); }
    });
    schedule(1000);
  }

  // -- progress of long work (chain verification, webhook jobs) ---------------------------
  function setupProgress() {
    const box = document.querySelector("[data-progress-url]");
    if (!box) return;
    const bar = box.querySelector("progress");
    const text = box.querySelector("[data-progress-text]");
    const fmt = (n) => Number(n || 0).toLocaleString("en");
    async function poll() {
      try {
        const response = await fetch(box.dataset.progressUrl, { credentials: "same-origin" });
        const p = await response.json();
        if (!response.ok) { text.textContent = (p.error && p.error.message) || "Progress is not available."; return; }
        const done = p.running === false || (p.status && p.status !== "running");
        const count = p.checked !== undefined ? p.checked : p.scanned;
        if (p.total) { bar.max = p.total; bar.value = Math.min(count, p.total); }
        text.textContent = p.checked !== undefined
          ? `${fmt(p.checked)} of ${fmt(p.total)} events checked (${p.percent}%).`
          : `${fmt(p.scanned)} of ${fmt(p.total)} scanned, ${fmt(p.queued)} queued (${p.percent}%).`;
        if (done) { window.location.reload(); return; }
      } catch (e) { /* try again */ }
      setTimeout(poll, 700);
    }
    setTimeout(poll, 500);
  }

  // -- small helpers -------------------------------------------------------------------------
  function setupConfirmations() {
    document.querySelectorAll("form[data-confirm]").forEach((form) => {
      form.addEventListener("submit", (event) => {
        if (!window.confirm(form.dataset.confirm)) event.preventDefault();
      });
    });
    document.querySelectorAll("input[data-must-match]").forEach((input) => {
      const other = document.getElementById(input.dataset.mustMatch);
      const check = () => input.setCustomValidity(
        input.value === other.value ? "" : "Type the same actor id to confirm.");
      input.addEventListener("input", check);
      other.addEventListener("input", check);
    });
  }

  function setupCopy() {
    document.querySelectorAll("[data-copy]").forEach((button) => {
      button.addEventListener("click", async () => {
        const source = document.getElementById(button.dataset.copy);
        try {
          await navigator.clipboard.writeText(source.textContent.trim());
          button.textContent = "Copied";
        } catch (e) {
          const range = document.createRange();
          range.selectNodeContents(source);
          const selection = window.getSelection();
          selection.removeAllRanges();
          selection.addRange(range);
          button.textContent = "Selected: press Ctrl+C";
        }
      });
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    setupTimeToggle();
    setupTail();
    setupProgress();
    setupConfirmations();
    setupCopy();
  });
})();
