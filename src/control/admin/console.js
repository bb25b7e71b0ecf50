// keygate console: API Keys, API Logs and Webhooks tabs over the admin API
// (/admin/v1, OpenAPI at /admin/v1/openapi.json). No framework, no CDN.
//
// Other scripts can fill a panel: tabs are found in the page ([role=tab] with
// aria-controls), a "keygate:tab" event on document says which panel was shown,
// and window.keygateConsole.api(method, path, body) calls the admin API with the
// token the user connected with.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const LEVELS = [["none", "None"], ["read", "Read"], ["write", "Write and Delete"]];
  const levelLabel = (l) => (LEVELS.find(([v]) => v === l) || [l, l])[1];
  const REVEAL_MS = 10000;
  const SLOW_MS = 2000;
  const LOG_PAGE = 50;

  const state = {
    token: "",
    connected: false,
    apiOn: null,
    categories: [],
    keys: [],
    keysAfter: null,
    logBefore: [],
    logNext: null,
    editing: null,
  };

  // ---------- small helpers ----------
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const kid of kids) if (kid != null) e.append(kid);
    return e;
  }

  // Small line icons (no icon font, no emoji: they render everywhere).
  const ICONS = {
    eye: "M1 12s4-7 11-7 11 7 11 7-4 7-11 7S1 12 1 12z M12 9a3 3 0 1 0 0 6a3 3 0 1 0 0-6z",
    eyeOff: "M1 12s4-7 11-7 11 7 11 7-4 7-11 7S1 12 1 12z M12 9a3 3 0 1 0 0 6a3 3 0 1 0 0-6z M3 3l18 18",
    copy: "M9 9h11v11H9z M5 15H4V4h11v1",
  };
  function icon(name) {
    const NS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    svg.setAttribute("class", "ico");
    const path = document.createElementNS(NS, "path");
    path.setAttribute("d", ICONS[name]);
    svg.append(path);
    return svg;
  }

  function say(msg, kind) {
    const s = $("status");
    s.textContent = msg || "";
    s.className = "status" + (kind ? " " + kind : "");
  }

  function relTime(iso) {
    if (!iso) return "never";
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return iso;
    const s = Math.round((Date.now() - t) / 1000);
    const fut = s < 0;
    const a = Math.abs(s);
    const [n, unit] =
      a < 45 ? [0, ""] :
      a < 3600 ? [Math.round(a / 60), "minute"] :
      a < 86400 ? [Math.round(a / 3600), "hour"] :
      a < 86400 * 30 ? [Math.round(a / 86400), "day"] :
      a < 86400 * 365 ? [Math.round(a / (86400 * 30)), "month"] : [Math.round(a / (86400 * 365)), "year"];
    if (!unit) return fut ? "in a moment" : "just now";
    const txt = `${n} ${unit}${n === 1 ? "" : "s"}`;
    return fut ? `in ${txt}` : `${txt} ago`;
  }

  function exact(iso) {
    const t = new Date(iso);
    return Number.isNaN(t.getTime()) ? iso : `${t.toLocaleString()} (${t.toISOString()})`;
  }

  function timeEl(iso) {
    if (!iso) return el("span", { class: "muted", text: "never" });
    return el("time", { datetime: iso, title: exact(iso), "data-rel": iso, text: relTime(iso) });
  }

  function fmtDuration(ms) {
    if (ms == null) return "–";
    return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(1)} ms`;
  }

  async function copyText(text) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      const ta = el("textarea", { class: "sr-only", "aria-hidden": "true" });
      ta.value = text;
      document.body.append(ta);
      ta.select();
      let ok = false;
      try { ok = document.execCommand("copy"); } catch { ok = false; }
      ta.remove();
      return ok;
    }
  }

  class ApiError extends Error {
    constructor(status, code, message) { super(message); this.status = status; this.code = code; }
  }

  async function api(method, path, body) {
    const opts = { method, headers: { Authorization: "Bearer " + state.token } };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    let r;
    try {
      r = await fetch("/admin/v1" + path, opts);
    } catch (e) {
      throw new ApiError(0, "network", "keygate did not answer: " + e.message);
    }
    if (r.status === 204) return null;
    let v = null;
    try { v = await r.json(); } catch { v = null; }
    if (!r.ok) {
      const e = (v && v.error) || {};
      throw new ApiError(r.status, e.code || "error", e.message || `HTTP ${r.status}`);
    }
    return v;
  }
  window.keygateConsole = { api, connected: () => state.connected };

  // ---------- confirmation ----------
  function confirmAction(title, text, yes) {
    return new Promise((resolve) => {
      const d = $("confirm-dialog");
      $("confirm-title").textContent = title;
      $("confirm-text").textContent = text;
      $("confirm-yes").textContent = yes;
      const done = (v) => {
        $("confirm-yes").onclick = null;
        $("confirm-no").onclick = null;
        d.onclose = null;
        if (d.open) d.close();
        resolve(v);
      };
      $("confirm-yes").onclick = () => done(true);
      $("confirm-no").onclick = () => done(false);
      d.onclose = () => done(false);
      d.showModal();
      $("confirm-no").focus();
    });
  }

  // ---------- tabs (generic: any [role=tab] with aria-controls) ----------
  function tabs() { return Array.from(document.querySelectorAll('[role="tab"]')); }
  function showTab(tab) {
    say(""); // a message belongs to the tab it was said on
    for (const t of tabs()) {
      const on = t === tab;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1;
      const p = $(t.getAttribute("aria-controls"));
      if (p) p.hidden = !on;
    }
    const panel = tab.getAttribute("aria-controls");
    document.dispatchEvent(new CustomEvent("keygate:tab", { detail: { panel } }));
    if (panel === "logs-panel" && state.connected) loadLogs(true);
  }
  function setupTabs() {
    const list = tabs();
    for (const t of list) {
      t.addEventListener("click", () => showTab(t));
      t.addEventListener("keydown", (e) => {
        const all = tabs();
        const i = all.indexOf(t);
        let j = null;
        if (e.key === "ArrowRight") j = (i + 1) % all.length;
        if (e.key === "ArrowLeft") j = (i - 1 + all.length) % all.length;
        if (e.key === "Home") j = 0;
        if (e.key === "End") j = all.length - 1;
        if (j != null) { e.preventDefault(); all[j].focus(); showTab(all[j]); }
      });
    }
  }

  // ---------- connect and the API switch ----------
  async function connect() {
    state.token = $("token").value.trim();
    if (!state.token) { say("Enter the admin token first.", "error"); return; }
    say("Connecting…");
    try {
      const [sw, cats] = await Promise.all([api("GET", "/api"), api("GET", "/categories")]);
      sessionStorage.setItem("keygate-token", state.token);
      state.connected = true;
      state.categories = cats;
      setApi(sw.enabled);
      $("new-key").disabled = false;
      say("Connected.", "ok");
      await Promise.all([loadStatus(), loadKeys(true)]);
      const sel = tabs().find((t) => t.getAttribute("aria-selected") === "true");
      if (sel && sel.getAttribute("aria-controls") === "logs-panel") loadLogs(true);
    } catch (e) {
      state.connected = false;
      setApi(null);
      $("new-key").disabled = true;
      say(e.status === 401 ? "The admin token is wrong." : e.message, "error");
    }
  }

  function setApi(on) {
    state.apiOn = on;
    const b = $("api-toggle");
    b.disabled = on == null;
    b.setAttribute("aria-checked", String(on === true));
    $("api-state").textContent = on == null ? "not connected" : on ? "on" : "off";
  }

  async function toggleApi() {
    if (!state.connected || state.apiOn == null) return;
    const turnOn = !state.apiOn;
    if (!turnOn) {
      const ok = await confirmAction(
        "Turn the API off?",
        "Every request with an API key will be refused with 401 api_disabled until you turn it back on. Keys and their permissions are kept.",
        "Turn off",
      );
      if (!ok) return;
    }
    try {
      const r = await api("PUT", "/api", { enabled: turnOn });
      setApi(r.enabled);
      say(r.enabled ? "The API is on: keys work again." : "The API is off: every key is refused.", "ok");
    } catch (e) {
      say(e.message, "error");
    }
  }

  // ---------- broken keys file ----------
  async function loadStatus() {
    try {
      const s = await api("GET", "/status");
      const b = $("keys-banner");
      if (s.keys_file.loads) { b.hidden = true; b.textContent = ""; return; }
      b.textContent =
        `The keys file on disk does not load, so it is not in force:\n${s.keys_file.error}\n\n` +
        `What is enforced: the last good keys (${s.enforced.keys} key${s.enforced.keys === 1 ? "" : "s"}), ` +
        `API ${s.enforced.api_enabled ? "on" : "off"}. Fix ${s.keys_file.path}; keygate applies it as soon as it loads.`;
      b.hidden = false;
    } catch (e) {
      if (e.status !== 404) say(e.message, "error");
    }
  }

  // ---------- keys ----------
  function effectiveLevel(perms, cat) {
    return perms[cat] || perms["*"] || "none";
  }

  function permSummary(k) {
    const parts = state.categories
      .map((c) => [c.name, effectiveLevel(k.permissions, c.name)])
      .filter(([, l]) => l !== "none");
    if (!parts.length) return "no access";
    return `${parts.length} of ${state.categories.length} categories`;
  }

  async function loadKeys(reset) {
    const tb = $("keys");
    const q = $("key-search").value.trim();
    const params = new URLSearchParams({ limit: "100" });
    if (q) params.set("q", q);
    if (!reset && state.keysAfter) params.set("after", state.keysAfter);
    try {
      const page = await api("GET", "/keys?" + params);
      if (reset) { state.keys = []; tb.textContent = ""; }
      state.keys.push(...page.keys);
      state.keysAfter = page.next_after;
      for (const k of page.keys) tb.append(keyRow(k));
      $("keys-more").hidden = !page.next_after;
      const empty = $("keys-empty");
      empty.classList.remove("error");
      empty.hidden = state.keys.length > 0;
      empty.textContent = q ? `No key's name contains "${q}".` : "No API keys yet. Create one to let an integration in.";
      fillKeyFilter();
    } catch (e) {
      if (reset) { tb.textContent = ""; state.keys = []; }
      const empty = $("keys-empty");
      empty.hidden = false;
      empty.classList.add("error");
      empty.textContent = "The keys could not be listed: " + e.message;
    }
  }

  function keyRow(k) {
    const tr = el("tr", { "data-id": k.id });
    const name = el("td", { "data-label": "Name" }, el("strong", { text: k.name }));
    if (k.expires_at) {
      const past = Date.parse(k.expires_at) < Date.now();
      name.append(el("br"), el("span", { class: "muted", text: past ? "expired " : "expires " }), timeEl(k.expires_at));
    }
    const code = el("code", { text: k.key, "data-masked": k.key });
    const operator = !k.prefix;
    const eye = el("button", {
      type: "button", class: "icon reveal", "aria-pressed": "false",
      "aria-label": `Reveal the key ${k.name}`, title: k.revealable ? "Show the key for a few seconds" : "This key cannot be revealed",
    }, icon("eye"));
    const copy = el("button", { type: "button", class: "icon copy", "aria-label": `Copy the key ${k.name}`, title: "Copy the key" }, icon("copy"));
    const keyCell = el("td", { "data-label": "Key" },
      el("div", { class: "keycell" }, code, eye, copy,
        operator ? el("span", { class: "tag", title: "Set by the operator in the keys file (secret:); no characters are shown", text: "operator secret" }) : null,
        k.revealable ? null : el("span", { class: "tag", title: "Made without a seal key: keygate keeps only its hash", text: "hash only" })));
    let hideTimer = null;
    const hide = () => {
      clearTimeout(hideTimer);
      code.textContent = k.key;
      eye.replaceChildren(icon("eye"));
      eye.setAttribute("aria-pressed", "false");
      eye.setAttribute("aria-label", `Reveal the key ${k.name}`);
    };
    const reveal = async () => {
      const r = await api("POST", `/keys/${encodeURIComponent(k.id)}/reveal`);
      return r.key;
    };
    eye.addEventListener("click", async () => {
      if (eye.getAttribute("aria-pressed") === "true") { hide(); say("Key hidden."); return; }
      if (!k.revealable) {
        say(`The key ${k.name} cannot be revealed: it was made without a seal key (KEYGATE_SEAL_KEY), so keygate keeps only its hash. If the value is lost, create a new key.`, "error");
        return;
      }
      try {
        code.textContent = await reveal();
        eye.setAttribute("aria-pressed", "true");
        eye.replaceChildren(icon("eyeOff"));
        eye.setAttribute("aria-label", `Hide the key ${k.name}`);
        say(`Showing the key ${k.name} for ${REVEAL_MS / 1000} seconds.`);
        hideTimer = setTimeout(hide, REVEAL_MS);
      } catch (e) {
        say(e.message, "error");
      }
    });
    copy.addEventListener("click", async () => {
      if (!k.revealable) {
        say(`The key ${k.name} cannot be copied: keygate keeps only its hash (it was made without a seal key).`, "error");
        return;
      }
      try {
        const ok = await copyText(await reveal());
        say(ok ? `The key ${k.name} is copied to the clipboard.` : "The browser did not allow copying.", ok ? "ok" : "error");
      } catch (e) {
        say(e.message, "error");
      }
    });
    const perms = el("td", { "data-label": "Permissions" },
      el("button", { type: "button", class: "link view-perms", "aria-label": `View permissions of ${k.name}`, text: "VIEW PERMISSIONS", onclick: () => viewPerms(k) }),
      el("br"), el("span", { class: "muted", text: permSummary(k) }));
    const menu = el("div", { class: "menu", role: "menu", hidden: true },
      el("button", { type: "button", role: "menuitem", text: "Edit", onclick: () => { closeMenus(); openKeyDialog(k); } }),
      el("button", { type: "button", role: "menuitem", text: "Delete", onclick: () => { closeMenus(); deleteKey(k); } }));
    const more = el("button", {
      type: "button", class: "icon more", "aria-haspopup": "menu", "aria-expanded": "false",
      "aria-label": `Actions for ${k.name}`, text: "••",
      onclick: (e) => {
        e.stopPropagation();
        const open = menu.hidden;
        closeMenus();
        menu.hidden = !open;
        more.setAttribute("aria-expanded", String(open));
        if (open) menu.querySelector("button").focus();
      },
    });
    const actions = el("td", { "data-label": "Actions" }, el("div", { class: "menu-wrap" }, more, menu));
    tr.append(name, el("td", { "data-label": "Last used" }, timeEl(k.last_used)), keyCell, perms, actions);
    return tr;
  }

  function closeMenus() {
    for (const m of document.querySelectorAll(".menu")) m.hidden = true;
    for (const b of document.querySelectorAll(".more")) b.setAttribute("aria-expanded", "false");
  }

  function viewPerms(k) {
    $("perms-title").textContent = `Permissions of ${k.name}`;
    const tb = $("perms-body");
    tb.textContent = "";
    for (const c of state.categories) {
      tb.append(el("tr", {},
        el("td", { text: c.name }),
        el("td", { text: levelLabel(effectiveLevel(k.permissions, c.name)) }),
        el("td", {}, el("code", { text: c.patterns.join(", ") }))));
    }
    const r = k.rate_limit;
    $("perms-rate").textContent = r
      ? `Rate limit: ${r.per_second ? r.per_second + " per second" : r.per_minute + " per minute"}, burst ${r.burst || r.per_second || r.per_minute}.`
      : "Rate limit: the gateway's default.";
    $("perms-dialog").showModal();
  }

  async function deleteKey(k) {
    const ok = await confirmAction(
      `Delete the key ${k.name}?`,
      "Requests with this key are refused (401) at once. This cannot be undone.",
      "Delete key",
    );
    if (!ok) return;
    try {
      await api("DELETE", `/keys/${encodeURIComponent(k.id)}`);
      say(`The key ${k.name} is deleted.`, "ok");
      await loadKeys(true);
      loadStatus();
    } catch (e) {
      say(e.message, "error");
    }
  }

  // ---------- create / edit dialog ----------
  function permRows(perms) {
    const tb = $("f-perms");
    tb.textContent = "";
    for (const c of state.categories) {
      const lvl = effectiveLevel(perms, c.name);
      const tr = el("tr", {}, el("th", { scope: "row", id: `cat-${c.name}`, text: c.name }));
      for (const [v, label] of LEVELS) {
        const id = `perm-${c.name}-${v}`;
        tr.append(el("td", {},
          el("input", { type: "radio", name: `perm-${c.name}`, id, value: v, checked: v === lvl, "aria-label": `${c.name}: ${label}` })));
      }
      tb.append(tr);
    }
  }

  function readPerms() {
    const out = {};
    for (const c of state.categories) {
      const r = document.querySelector(`input[name="perm-${CSS.escape(c.name)}"]:checked`);
      out[c.name] = r ? r.value : "none";
    }
    return out;
  }

  function fieldError(id, msg) {
    $(id + "-err").textContent = msg || "";
    const input = $(id);
    if (input) input.setAttribute("aria-invalid", msg ? "true" : "false");
  }

  function toLocalInput(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    const pad = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }

  function openKeyDialog(k) {
    state.editing = k || null;
    $("key-dialog-title").textContent = k ? `Edit ${k.name}` : "Create API key";
    $("f-save").textContent = k ? "Save changes" : "Create key";
    $("f-name").value = k ? k.name : "";
    const r = k && k.rate_limit;
    $("f-rate").value = r ? r.per_second || r.per_minute || "" : "";
    $("f-rate-per").value = r && r.per_minute ? "per_minute" : "per_second";
    $("f-burst").value = r && r.burst ? r.burst : "";
    $("f-expires").value = k ? toLocalInput(k.expires_at) : "";
    for (const f of ["f-name", "f-perms", "f-rate", "f-burst", "f-expires"]) fieldError(f, "");
    $("f-err").textContent = "";
    permRows(k ? k.permissions : {});
    $("key-dialog").showModal();
    $("f-name").focus();
  }

  function positiveInt(s) {
    return /^[0-9]+$/.test(s) && Number(s) >= 1 && Number(s) <= 4294967295;
  }

  function validate() {
    let ok = true;
    const name = $("f-name").value.trim();
    if (!name) { fieldError("f-name", "Give the key a name, e.g. the integration that uses it."); ok = false; }
    else if (name.length > 64) { fieldError("f-name", "At most 64 characters."); ok = false; }
    else fieldError("f-name", "");
    const perms = readPerms();
    if (!Object.values(perms).some((l) => l !== "none")) {
      fieldError("f-perms", "Give the key at least one permission (Read or Write and Delete on a category)."); ok = false;
    } else fieldError("f-perms", "");
    const rate = $("f-rate").value.trim();
    const burst = $("f-burst").value.trim();
    if (rate && !positiveInt(rate)) { fieldError("f-rate", "A whole number of requests, 1 or more."); ok = false; }
    else fieldError("f-rate", "");
    if (burst && !positiveInt(burst)) { fieldError("f-burst", "A whole number, 1 or more."); ok = false; }
    else if (burst && !rate) { fieldError("f-burst", "Set a rate limit first."); ok = false; }
    else if (burst && Number(burst) > 1000000) { fieldError("f-burst", "At most 1000000."); ok = false; }
    else fieldError("f-burst", "");
    const exp = $("f-expires").value;
    let expires = null;
    if (exp) {
      const t = new Date(exp);
      if (Number.isNaN(t.getTime())) { fieldError("f-expires", "Not a date and time."); ok = false; }
      else if (t.getTime() <= Date.now() && !(state.editing && state.editing.expires_at)) { fieldError("f-expires", "Choose a time in the future."); ok = false; }
      else { fieldError("f-expires", ""); expires = t.toISOString().replace(/\.\d{3}Z$/, "Z"); }
    } else fieldError("f-expires", "");
    const per = $("f-rate-per").value;
    const rate_limit = rate ? { [per]: Number(rate), ...(burst ? { burst: Number(burst) } : {}) } : null;
    return ok ? { name, permissions: perms, rate_limit, expires_at: expires } : null;
  }

  async function saveKey(e) {
    e.preventDefault();
    $("f-err").textContent = "";
    const v = validate();
    if (!v) { const bad = document.querySelector('#key-form [aria-invalid="true"]'); if (bad) bad.focus(); return; }
    const editing = state.editing;
    try {
      if (editing) {
        await api("PATCH", `/keys/${encodeURIComponent(editing.id)}`, v);
        $("key-dialog").close();
        say(`The key ${v.name} is saved; the change is in force now.`, "ok");
      } else {
        const body = { name: v.name, permissions: v.permissions };
        if (v.rate_limit) body.rate_limit = v.rate_limit;
        if (v.expires_at) body.expires_at = v.expires_at;
        const created = await api("POST", "/keys", body);
        $("key-dialog").close();
        say(`The key ${created.name} is created.`, "ok");
        $("created-key").textContent = created.key;
        $("created-dialog").showModal();
      }
      await loadKeys(true);
      loadStatus();
    } catch (err) {
      if (err.code === "name_taken") fieldError("f-name", err.message);
      else if (/^name/.test(err.message)) fieldError("f-name", err.message);
      else if (/^rate_limit/.test(err.message)) fieldError("f-rate", err.message);
      else if (/^expires_at/.test(err.message)) fieldError("f-expires", err.message);
      else $("f-err").textContent = err.message;
    }
  }

  // ---------- logs ----------
  function fillKeyFilter() {
    const sel = $("log-key");
    const cur = sel.value;
    sel.textContent = "";
    sel.append(el("option", { value: "", text: "All keys" }));
    for (const k of state.keys) sel.append(el("option", { value: k.id, text: k.name }));
    sel.value = state.keys.some((k) => k.id === cur) ? cur : "";
  }

  function logParams() {
    const p = new URLSearchParams();
    const path = $("log-path").value.trim();
    if (path) p.set("path", path);
    for (const [id, name] of [["log-method", "method"], ["log-status", "status"], ["log-key", "key"]]) {
      if ($(id).value) p.set(name, $(id).value);
    }
    return p;
  }

  let logSeq = 0;
  async function loadLogs(reset) {
    if (!state.connected) return;
    const seq = ++logSeq;
    if (reset) { state.logBefore = []; state.logNext = null; }
    const p = logParams();
    p.set("limit", String(LOG_PAGE));
    const cursor = state.logBefore[state.logBefore.length - 1];
    if (cursor) p.set("before", cursor);
    const empty = $("logs-empty");
    try {
      const page = await api("GET", "/logs?" + p);
      if (seq !== logSeq) return; // a newer filter is being loaded
      const tb = $("logs");
      tb.textContent = "";
      for (const r of page.records) tb.append(logRow(r));
      state.logNext = page.next_before;
      $("logs-older").hidden = !page.next_before;
      $("logs-newest").hidden = state.logBefore.length === 0;
      empty.classList.remove("error");
      empty.hidden = page.records.length > 0;
      empty.textContent = logParams().toString() ? "No request matches these filters." : "No requests yet.";
      if (reset) chart();
    } catch (e) {
      if (seq !== logSeq) return;
      $("logs").textContent = "";
      empty.hidden = false;
      empty.classList.add("error");
      empty.textContent = e.code === "no_log_file"
        ? "The access log goes to standard output (access_log.path: \"-\"), so there is nothing to show here."
        : "The log could not be read: " + e.message;
    }
  }

  function logRow(r) {
    const cls = "c" + String(r.status).charAt(0);
    const dur = el("td", { "data-label": "Duration", text: fmtDuration(r.duration_ms) });
    if (r.duration_ms > SLOW_MS) dur.append(el("span", { class: "slow", title: "slower than 2 seconds", text: "slow" }));
    return el("tr", {},
      el("td", { "data-label": "Path" }, el("code", { text: r.path })),
      el("td", { "data-label": "Created at" }, timeEl(r.ts)),
      el("td", { "data-label": "Method", text: r.method }),
      el("td", { "data-label": "Response" }, el("span", { class: "st " + cls, text: String(r.status) })),
      el("td", { "data-label": "Reason" }, r.reason ? el("code", { text: r.reason }) : el("span", { class: "muted", text: "–" })),
      el("td", { "data-label": "API key", text: r.key_name || "–" }),
      el("td", { "data-label": "IP address", text: r.ip }),
      dur);
  }

  // Requests over time by status class: up to 1000 newest records matching the
  // filters, in up to 30 buckets, stacked.
  async function chart() {
    const svg = $("chart");
    const NS = "http://www.w3.org/2000/svg";
    const p = logParams();
    p.set("limit", "1000");
    let recs = [];
    try { recs = (await api("GET", "/logs?" + p)).records; } catch { recs = []; }
    svg.textContent = "";
    const W = 600, H = 140, top = 8, bottom = 2;
    const classes = ["2", "3", "4", "5"];
    const totals = { 2: 0, 3: 0, 4: 0, 5: 0 };
    const times = recs.map((r) => Date.parse(r.ts)).filter((t) => !Number.isNaN(t));
    const legend = $("chart-summary");
    legend.textContent = "";
    if (!times.length) {
      legend.textContent = "No requests to chart.";
      return;
    }
    const lo = Math.min(...times), hi = Math.max(...times);
    const n = 30;
    const span = Math.max(hi - lo, 1);
    const buckets = Array.from({ length: n }, () => ({ 2: 0, 3: 0, 4: 0, 5: 0 }));
    recs.forEach((r, i) => {
      const c = String(r.status).charAt(0);
      if (!(c in totals)) return;
      const b = Math.min(n - 1, Math.floor(((times[i] - lo) / span) * n));
      buckets[b][c] += 1;
      totals[c] += 1;
    });
    const max = Math.max(1, ...buckets.map((b) => b[2] + b[3] + b[4] + b[5]));
    const bw = W / n;
    buckets.forEach((b, i) => {
      let y = H - bottom;
      for (const c of classes) {
        if (!b[c]) continue;
        const h = (b[c] / max) * (H - top - bottom);
        y -= h;
        const rect = document.createElementNS(NS, "rect");
        rect.setAttribute("x", String(i * bw + 1));
        rect.setAttribute("y", String(y));
        rect.setAttribute("width", String(Math.max(bw - 2, 1)));
        rect.setAttribute("height", String(h));
        rect.setAttribute("class", "bar c" + c);
        const title = document.createElementNS(NS, "title");
        title.textContent = `${b[c]} × ${c}xx`;
        rect.append(title);
        svg.append(rect);
      }
    });
    for (const c of classes) {
      legend.append(el("span", {}, el("span", { class: "sw c" + c, "aria-hidden": "true" }), `${c}xx: ${totals[c]}`));
    }
    legend.append(el("span", { class: "muted", text: `${recs.length} requests, ${new Date(lo).toLocaleTimeString()} to ${new Date(hi).toLocaleTimeString()}` }));
  }

  // ---------- wiring ----------
  function debounce(f, ms) {
    let t = null;
    return (...a) => { clearTimeout(t); t = setTimeout(() => f(...a), ms); };
  }

  document.addEventListener("DOMContentLoaded", () => {
    setupTabs();
    // A token in the fragment (keygate demo prints such a URL) signs in; the
    // fragment is never sent to a server, and leaves the address bar at once.
    const fromHash = () => {
      const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
      if (!m) return false;
      $("token").value = decodeURIComponent(m[1]);
      history.replaceState(null, "", location.pathname + location.search);
      return true;
    };
    window.addEventListener("hashchange", () => { if (fromHash()) connect(); });
    if (!fromHash()) $("token").value = sessionStorage.getItem("keygate-token") || "";
    $("login").addEventListener("submit", (e) => { e.preventDefault(); connect(); });
    $("api-toggle").addEventListener("click", toggleApi);
    $("new-key").addEventListener("click", () => { say(""); openKeyDialog(null); });
    $("key-form").addEventListener("submit", saveKey);
    $("f-cancel").addEventListener("click", () => $("key-dialog").close());
    $("f-all-apply").addEventListener("click", () => {
      const v = $("f-all").value;
      for (const r of document.querySelectorAll(`#f-perms input[value="${v}"]`)) r.checked = true;
      fieldError("f-perms", "");
    });
    $("created-copy").addEventListener("click", async () => {
      const ok = await copyText($("created-key").textContent);
      say(ok ? "The new key is copied to the clipboard." : "The browser did not allow copying.", ok ? "ok" : "error");
    });
    $("created-dialog").addEventListener("close", () => { $("created-key").textContent = ""; });
    $("created-close").addEventListener("click", () => $("created-dialog").close());
    $("perms-close").addEventListener("click", () => $("perms-dialog").close());
    $("key-search").addEventListener("input", debounce(() => loadKeys(true), 250));
    $("keys-more").addEventListener("click", () => loadKeys(false));
    $("log-path").addEventListener("input", debounce(() => loadLogs(true), 250));
    $("log-filters").addEventListener("submit", (e) => { e.preventDefault(); loadLogs(true); });
    for (const id of ["log-method", "log-status", "log-key"]) $(id).addEventListener("change", () => loadLogs(true));
    $("logs-older").addEventListener("click", () => { if (state.logNext) { state.logBefore.push(state.logNext); loadLogs(false); } });
    $("logs-newest").addEventListener("click", () => loadLogs(true));
    document.addEventListener("click", closeMenus);
    document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeMenus(); });
    setInterval(() => {
      for (const t of document.querySelectorAll("time[data-rel]")) t.textContent = relTime(t.getAttribute("data-rel"));
    }, 30000);
    if ($("token").value) connect();
  });
})();
