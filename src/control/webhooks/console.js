// The console's Webhooks tab: fills the element with id "webhooks-panel".
// Add an endpoint (URL, events), see its signing secret once (with a copy
// button), send a test event, read the delivery log, resend, enable or disable,
// rotate the secret, delete (after the console's confirmation dialog). Uses
// window.keygateConsole.api (the token the user connected with), or the admin
// API with the token in sessionStorage "keygate-token". Loads when the tab is
// shown. Every value from the server is written with textContent, never as HTML,
// and nothing sets a style attribute (the CSP has no 'unsafe-inline').
(function () {
  "use strict";
  const panel = document.getElementById("webhooks-panel");
  if (!panel) return;

  const FIXED = ["key.created", "key.updated", "key.deleted", "key.expired", "api.enabled",
    "api.disabled", "key.failing", "key.recovered", "webhook.test"];
  const LOG_REFRESH_MS = 2000; // the open delivery log follows retries while the tab is shown

  function token() {
    return sessionStorage.getItem("keygate-token") || (document.getElementById("token") || {}).value || "";
  }

  async function call(method, path, body) {
    const kc = window.keygateConsole;
    if (kc && kc.connected && kc.connected()) return kc.api(method, "/" + path, body);
    const res = await fetch("/admin/v1/" + path, {
      method,
      headers: Object.assign({ "Authorization": "Bearer " + token() },
        body ? { "Content-Type": "application/json" } : {}),
      body: body ? JSON.stringify(body) : undefined,
    });
    if (res.status === 204) return null;
    let data = null;
    try { data = await res.json(); } catch (_) { data = null; }
    if (!res.ok) {
      const e = (data && data.error) || {};
      const err = new Error(e.message || "HTTP " + res.status);
      err.status = res.status;
      throw err;
    }
    return data;
  }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) e.append(c == null ? "–" : (c instanceof Node ? c : String(c)));
    return e;
  }

  const idFor = (t) => "wh-ev-" + t.replace(/\*/g, "all").replace(/\./g, "-");

  const banner = el("div", { class: "banner", id: "webhooks-banner", role: "alert", hidden: true });
  const message = el("p", { class: "status", id: "webhooks-status", role: "status", "aria-live": "polite" });
  const urlBox = el("input", { id: "webhook-url", type: "url", inputmode: "url", autocomplete: "off",
    spellcheck: "false", placeholder: "https://example.com/hooks", "aria-describedby": "webhook-url-err" });
  const urlErr = el("p", { id: "webhook-url-err", class: "field-err", "aria-live": "polite" });
  const descBox = el("input", { id: "webhook-description", maxlength: "200", autocomplete: "off" });
  const eventsBox = el("div", { id: "webhook-events", class: "wh-events" });
  const eventsErr = el("p", { id: "webhook-events-err", class: "field-err", "aria-live": "polite" });
  const created = el("div", { id: "webhook-created", class: "wh-created", hidden: true });
  const list = el("tbody", { id: "webhooks" });
  const empty = el("p", { id: "webhooks-empty", class: "empty", hidden: true }, "No endpoint yet: press Add endpoint.");
  const log = el("section", { id: "webhook-log", class: "wh-log", "aria-live": "polite", hidden: true });
  let logFor = null; // the endpoint whose delivery log is open
  let loaded = false;

  function say(msg, kind) {
    message.textContent = msg || "";
    message.className = "status" + (kind ? " " + kind : "");
  }

  function renderEventChoices(categories) {
    eventsBox.replaceChildren();
    const types = ["*", "key.*"].concat(FIXED);
    for (const c of categories) types.push(c.name + ".*", c.name + ".created", c.name + ".updated", c.name + ".deleted");
    for (const t of types) {
      const box = el("input", { type: "checkbox", value: t, id: idFor(t) });
      box.addEventListener("change", () => { eventsErr.textContent = ""; });
      const text = t === "*" ? "every event (*)" : t;
      eventsBox.append(el("label", { for: idFor(t), class: "wh-event" }, box, el("span", {}, text)));
    }
  }

  function chosenEvents() {
    return Array.from(eventsBox.querySelectorAll("input:checked")).map((b) => b.value);
  }

  async function copyText(text) {
    try { await navigator.clipboard.writeText(text); return true; } catch (_) { return false; }
  }

  function showSecret(title, secret) {
    const value = el("code", { id: "webhook-secret" }, secret);
    const copy = el("button", {
      type: "button", id: "webhook-secret-copy",
      onclick: async () => {
        const ok = await copyText(secret);
        say(ok ? "The signing secret is copied to the clipboard." : "The browser did not allow copying: select the secret and copy it by hand.",
          ok ? "ok" : "error");
      },
    }, "Copy secret");
    const done = el("button", {
      type: "button", id: "webhook-secret-done", class: "primary",
      onclick: () => { created.replaceChildren(); created.hidden = true; say(""); },
    }, "Done");
    created.replaceChildren(
      el("h3", { id: "webhook-created-title" }, title),
      el("p", {}, "Signing secret — copy it now: this is the only time keygate shows it."),
      el("p", { class: "new-key" }, value),
      el("div", { class: "buttons" }, copy, done));
    created.hidden = false;
    copy.focus();
  }

  async function create(ev) {
    ev.preventDefault();
    urlErr.textContent = ""; eventsErr.textContent = "";
    urlBox.removeAttribute("aria-invalid");
    const url = urlBox.value.trim();
    const events = chosenEvents();
    let bad = false;
    if (!/^https?:\/\/\S+$/i.test(url)) {
      urlErr.textContent = "Enter the endpoint's URL (https://…).";
      urlBox.setAttribute("aria-invalid", "true");
      bad = true;
    }
    if (!events.length) { eventsErr.textContent = "Choose at least one event."; bad = true; }
    if (bad) { say("The endpoint was not added: see the fields.", "error"); return; }
    try {
      const body = { url, events };
      if (descBox.value.trim()) body.description = descBox.value.trim();
      const e = await call("POST", "webhooks", body);
      urlBox.value = ""; descBox.value = "";
      for (const b of eventsBox.querySelectorAll("input:checked")) b.checked = false;
      form.hidden = true;
      newButton.setAttribute("aria-expanded", "false");
      await refresh();
      say("The endpoint " + e.url + " is added.", "ok");
      showSecret("Endpoint " + e.url + " added", e.secret);
    } catch (err) {
      if (err.code === "target_not_allowed" || /url/i.test(err.message)) {
        urlErr.textContent = err.message;
        urlBox.setAttribute("aria-invalid", "true");
      }
      say(err.message, "error");
    }
  }

  async function act(what, fn) {
    try { await fn(); await refresh(); say(what, "ok"); } catch (err) { say(err.message, "error"); }
  }

  // The console's own confirmation dialog (the same one the keys flow uses).
  function confirmAction(title, text, yes) {
    const d = document.getElementById("confirm-dialog");
    if (!d || !d.showModal) return Promise.resolve(window.confirm(text));
    return new Promise((resolve) => {
      const yesB = document.getElementById("confirm-yes");
      const noB = document.getElementById("confirm-no");
      document.getElementById("confirm-title").textContent = title;
      document.getElementById("confirm-text").textContent = text;
      yesB.textContent = yes;
      const done = (v) => {
        yesB.onclick = null; noB.onclick = null; d.onclose = null;
        if (d.open) d.close();
        resolve(v);
      };
      yesB.onclick = () => done(true);
      noB.onclick = () => done(false);
      d.onclose = () => done(false);
      d.showModal();
      noB.focus();
    });
  }

  function fmtTime(iso) {
    const t = new Date(iso);
    return Number.isNaN(t.getTime()) ? (iso || "–") : t.toLocaleString();
  }

  function cell(label, ...kids) { return el("td", { "data-label": label }, ...kids); }

  async function showLog(e, quiet) {
    try {
      const data = await call("GET", "webhooks/" + encodeURIComponent(e.id) + "/deliveries");
      logFor = e;
      const rows = el("tbody", { id: "webhook-deliveries" });
      for (const d of data.deliveries) {
        const resend = d.event_id && d.result !== "endpoint.disabled" ? el("button", {
          type: "button", class: "resend", "aria-label": "Resend " + d.type + " " + d.event_id,
          onclick: () => act("The event " + d.event_id + " is queued again.", () => call("POST", "webhooks/" + encodeURIComponent(e.id) +
            "/deliveries/" + encodeURIComponent(d.event_id) + "/resend")),
        }, "Resend") : "";
        const st = d.status == null ? (d.error || "–") : String(d.status);
        rows.append(el("tr", {},
          cell("Time", el("time", { datetime: d.time, class: "wh-time" }, fmtTime(d.time))),
          cell("Event", el("code", {}, d.event_id || "")),
          cell("Type", d.type),
          cell("Result", el("span", { class: "wh-result " + (d.result === "delivered" ? "ok" : "error") }, d.result)),
          cell("Status", st),
          cell("Duration", d.duration_ms == null ? "–" : d.duration_ms.toFixed(1) + " ms"),
          cell("Response", el("code", { class: "wh-response" }, (d.response || "").slice(0, 200))),
          cell("Next retry", d.next_retry ? fmtTime(d.next_retry) : "–"),
          cell("Actions", resend)));
      }
      const pending = data.pending.length ? data.pending.length + " pending" : "nothing pending";
      const children = [
        el("div", { class: "toolbar" },
          el("h3", { id: "webhook-log-title" }, "Deliveries to " + e.url + " (" + pending + ")"),
          el("button", { type: "button", id: "webhook-log-refresh", onclick: () => showLog(e) }, "Refresh"),
          el("button", { type: "button", id: "webhook-log-close", onclick: closeLog }, "Close log")),
      ];
      if (data.deliveries.length) {
        children.push(el("table", { class: "deliveries", "aria-labelledby": "webhook-log-title" },
          el("thead", {}, el("tr", {}, ...["Time", "Event", "Type", "Result", "Status", "Duration",
            "Response", "Next retry", "Actions"].map((h) => el("th", { scope: "col" }, h)))), rows));
      } else {
        children.push(el("p", { class: "empty" }, "No delivery yet."));
      }
      log.replaceChildren(...children);
      log.hidden = false;
    } catch (err) { if (!quiet) say(err.message, "error"); }
  }

  function closeLog() { logFor = null; log.hidden = true; log.replaceChildren(); }

  function row(e) {
    const path = "webhooks/" + encodeURIComponent(e.id);
    const state = e.enabled ? "enabled" : ("disabled" + (e.disabled_reason ? ": " + e.disabled_reason : ""));
    const b = (cls, label, text, onclick, extra) =>
      el("button", Object.assign({ type: "button", class: cls, "aria-label": label + " " + e.url, onclick }, extra || {}), text);
    return el("tr", { "data-id": e.id },
      cell("Endpoint", el("div", {}, el("code", { class: "wh-url" }, e.url),
        e.description ? el("span", { class: "muted wh-desc" }, e.description) : "")),
      cell("Events", e.events.join(", ")),
      cell("State", el("span", { class: "wh-state " + (e.enabled ? "ok" : "off") }, state)),
      cell("Actions", el("div", { class: "wh-actions" },
        b("test", "Send a test event to", "Send test", () => act("A webhook.test event is queued for " + e.url + ".", async () => {
          await call("POST", path + "/test");
          if (!logFor || logFor.id === e.id) await showLog(e, true);
        })),
        b("log", "Delivery log of", "Log", () => showLog(e)),
        b("toggle", (e.enabled ? "Disable" : "Enable"), e.enabled ? "Disable" : "Enable",
          () => act("The endpoint " + e.url + " is " + (e.enabled ? "disabled" : "enabled") + ".",
            () => call("PATCH", path, { enabled: !e.enabled })), { "aria-pressed": String(!e.enabled) }),
        b("rotate", "Rotate the secret of", "Rotate secret", async () => {
          if (!(await confirmAction("Rotate the signing secret?",
            "A new secret for " + e.url + " is made and shown once; the old one keeps signing (a second signature) for 24 hours.",
            "Rotate"))) return;
          try {
            const r = await call("POST", path + "/rotate-secret");
            say("The secret of " + e.url + " is rotated.", "ok");
            showSecret("New secret for " + e.url, r.secret);
          } catch (err) { say(err.message, "error"); }
        }),
        b("delete danger-text", "Delete", "Delete", async () => {
          if (!(await confirmAction("Delete this endpoint?",
            "The endpoint " + e.url + " and its pending deliveries are deleted; it receives no more events.",
            "Delete"))) return;
          if (logFor && logFor.id === e.id) closeLog();
          act("The endpoint " + e.url + " is deleted.", () => call("DELETE", path));
        }))));
  }

  async function refresh() {
    const data = await call("GET", "webhooks");
    list.replaceChildren(...data.webhooks.map(row));
    empty.hidden = data.webhooks.length > 0;
    const off = data.webhooks.filter((e) => !e.enabled && e.disabled_reason);
    banner.textContent = off.length
      ? off.length + " webhook endpoint(s) were switched off after failing for days: " + off.map((e) => e.url).join(", ")
      : "";
    banner.hidden = !off.length;
    if (logFor) {
      const still = data.webhooks.find((e) => e.id === logFor.id);
      if (still) await showLog(still, true); else closeLog();
    }
  }

  async function load() {
    try {
      const cats = await call("GET", "categories");
      if (!loaded) renderEventChoices(cats);
      say(""); // a message belongs to the visit of the tab it was said on
      await refresh();
      loaded = true;
    } catch (err) {
      say(err.status === 401 ? "Connect with the admin token first." : err.message, "error");
    }
  }

  const newButton = el("button", { type: "button", id: "webhook-new", class: "primary", "aria-expanded": "false",
    "aria-controls": "webhook-form", onclick: () => showForm(form.hidden) }, "Add endpoint");
  const form = el("form", { id: "webhook-form", class: "wh-form", novalidate: true, onsubmit: create, hidden: true,
    "aria-labelledby": "webhook-form-title" },
    el("h3", { id: "webhook-form-title" }, "Add an endpoint"),
    el("div", { class: "field-row" },
      el("div", { class: "field wh-url-field" },
        el("label", { for: "webhook-url" }, "Endpoint URL"), urlBox, urlErr),
      el("div", { class: "field" },
        el("label", { for: "webhook-description" }, "Description ", el("span", { class: "opt" }, "(optional)")), descBox)),
    el("fieldset", { class: "perms", "aria-describedby": "webhook-events-err" },
      el("legend", {}, "Events"), eventsBox, eventsErr),
    el("div", { class: "buttons" },
      el("button", { id: "webhook-cancel", type: "button", onclick: () => showForm(false) }, "Cancel"),
      el("button", { id: "webhook-create", type: "submit", class: "primary" }, "Save endpoint")));

  function showForm(open) {
    form.hidden = !open;
    newButton.setAttribute("aria-expanded", String(open));
    if (open) { created.hidden = true; created.replaceChildren(); urlBox.focus(); }
    else { urlErr.textContent = ""; eventsErr.textContent = ""; urlBox.removeAttribute("aria-invalid"); newButton.focus(); }
  }

  panel.replaceChildren(
    el("div", { class: "toolbar" }, el("h2", {}, "Webhooks"), newButton),
    banner, message,
    el("p", { class: "muted" }, "Signed events (Standard Webhooks) about keys, the API switch, integration health and writes through keygate. " +
      "Changes made in the app's own UI do not pass through keygate and send no event."),
    form,
    created,
    el("h3", { id: "webhooks-title" }, "Endpoints"),
    el("table", { class: "webhooks", "aria-labelledby": "webhooks-title" },
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Endpoint"), el("th", { scope: "col" }, "Events"),
        el("th", { scope: "col" }, "State"), el("th", { scope: "col" }, "Actions"))), list),
    empty,
    log);

  document.addEventListener("keygate:tab", (ev) => {
    if (ev.detail && ev.detail.panel === "webhooks-panel") load();
  });
  setInterval(() => {
    if (loaded && logFor && !panel.hidden && document.visibilityState === "visible") showLog(logFor, true);
  }, LOG_REFRESH_MS);
  if (!panel.hidden && token()) load();
})();
