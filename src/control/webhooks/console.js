// The console's Webhooks tab: fills the element with id "webhooks-panel".
// Add an endpoint (URL, events), see its signing secret once (with a copy
// button), send a test event, read the delivery log, resend, enable or disable,
// rotate the secret, delete. Uses the admin API with the console's Bearer token
// (sessionStorage "keygate-token", or the #token box). Every value from the
// server is written with textContent, never as HTML.
(function () {
  "use strict";
  const panel = document.getElementById("webhooks-panel");
  if (!panel) return;

  const FIXED = ["key.created", "key.updated", "key.deleted", "key.expired", "api.enabled",
    "api.disabled", "key.failing", "key.recovered", "webhook.test"];

  function token() {
    const box = document.getElementById("token");
    return (box && box.value) || sessionStorage.getItem("keygate-token") || "";
  }

  async function call(method, path, body) {
    const res = await fetch("/admin/v1/" + path, {
      method,
      headers: Object.assign({ "Authorization": "Bearer " + token() },
        body ? { "Content-Type": "application/json" } : {}),
      body: body ? JSON.stringify(body) : undefined,
    });
    if (res.status === 204) return null;
    const data = await res.json();
    if (!res.ok) throw new Error(data.error ? data.error.code + ": " + data.error.message : String(res.status));
    return data;
  }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c == null ? "–" : (c instanceof Node ? c : String(c)));
    return e;
  }

  const banner = el("div", { class: "err", id: "webhooks-banner" });
  const message = el("p", { class: "muted", id: "webhooks-status" });
  const urlBox = el("input", { id: "webhook-url", size: "40", placeholder: "https://example.com/hooks" });
  const descBox = el("input", { id: "webhook-description", size: "24", placeholder: "Description (optional)" });
  const eventsBox = el("div", { id: "webhook-events", class: "row" });
  const created = el("div", { id: "webhook-created" });
  const list = el("tbody", { id: "webhooks" });
  const log = el("div", { id: "webhook-log" });

  function say(msg, ok) { message.textContent = msg; message.className = ok ? "ok" : "err"; }

  function renderEventChoices(categories) {
    eventsBox.replaceChildren();
    const types = ["*"].concat(FIXED);
    for (const c of categories) types.push(c.name + ".created", c.name + ".updated", c.name + ".deleted");
    for (const t of types) {
      const box = el("input", { type: "checkbox", value: t });
      if (t === "*") box.checked = false;
      eventsBox.append(el("label", {}, box, " " + (t === "*" ? "every event" : t)));
    }
  }

  function chosenEvents() {
    return Array.from(eventsBox.querySelectorAll("input:checked")).map((b) => b.value);
  }

  function showSecret(title, secret) {
    const value = el("code", { id: "webhook-secret" }, secret);
    const copy = el("button", {
      onclick: async () => {
        try { await navigator.clipboard.writeText(secret); copy.textContent = "Copied"; }
        catch (_) { copy.textContent = "Select and copy it by hand"; }
      },
    }, "Copy");
    created.replaceChildren(el("div", { class: "new-key" },
      el("strong", {}, title), el("br"),
      "Signing secret (shown once; keygate will not show it again): ", value, " ", copy));
  }

  async function create() {
    try {
      const body = { url: urlBox.value.trim(), events: chosenEvents() };
      if (descBox.value.trim()) body.description = descBox.value.trim();
      const e = await call("POST", "webhooks", body);
      showSecret("Endpoint " + e.id + " added.", e.secret);
      urlBox.value = ""; descBox.value = "";
      say("endpoint added", true);
      await refresh();
    } catch (err) { say(err.message, false); }
  }

  async function act(what, fn) {
    try { await fn(); say(what, true); await refresh(); } catch (err) { say(err.message, false); }
  }

  async function showLog(e) {
    try {
      const data = await call("GET", "webhooks/" + encodeURIComponent(e.id) + "/deliveries");
      const rows = el("tbody");
      for (const d of data.deliveries) {
        const resend = d.event_id ? el("button", {
          onclick: () => act("resent " + d.event_id, () => call("POST", "webhooks/" + encodeURIComponent(e.id) +
            "/deliveries/" + encodeURIComponent(d.event_id) + "/resend")),
        }, "Resend") : "";
        rows.append(el("tr", {}, el("td", {}, d.time), el("td", {}, el("code", {}, d.event_id || "")),
          el("td", {}, d.type), el("td", {}, d.result), el("td", {}, d.status == null ? (d.error || "–") : d.status),
          el("td", {}, d.duration_ms == null ? "–" : d.duration_ms.toFixed(1) + " ms"),
          el("td", {}, el("code", {}, (d.response || "").slice(0, 200))), el("td", {}, d.next_retry || ""),
          el("td", {}, resend)));
      }
      const pending = data.pending.length ? data.pending.length + " pending" : "nothing pending";
      log.replaceChildren(el("h3", {}, "Deliveries to " + e.url + " (" + pending + ")"),
        el("table", {}, el("thead", {}, el("tr", {}, ...["Time", "Event", "Type", "Result", "Status", "Duration",
          "Response", "Next retry", ""].map((h) => el("th", {}, h)))), rows));
    } catch (err) { say(err.message, false); }
  }

  function row(e) {
    const path = "webhooks/" + encodeURIComponent(e.id);
    const state = e.enabled ? "enabled" : ("disabled" + (e.disabled_reason ? ": " + e.disabled_reason : ""));
    return el("tr", {},
      el("td", {}, el("code", {}, e.url), el("br"), el("span", { class: "muted" }, e.description || "")),
      el("td", {}, e.events.join(", ")),
      el("td", {}, state),
      el("td", {},
        el("button", { onclick: () => act("test event queued", () => call("POST", path + "/test")) }, "Test"), " ",
        el("button", { onclick: () => showLog(e) }, "Log"), " ",
        el("button", { onclick: () => act(e.enabled ? "disabled" : "enabled", () => call("PATCH", path, { enabled: !e.enabled })) },
          e.enabled ? "Disable" : "Enable"), " ",
        el("button", {
          onclick: async () => {
            try { const r = await call("POST", path + "/rotate-secret"); showSecret("New secret for " + e.id + " (the old one signs for 24 hours more).", r.secret); }
            catch (err) { say(err.message, false); }
          },
        }, "Rotate secret"), " ",
        el("button", {
          onclick: () => { if (confirm("Delete the endpoint " + e.url + "?")) act("deleted", () => call("DELETE", path)); },
        }, "Delete")));
  }

  async function refresh() {
    const data = await call("GET", "webhooks");
    list.replaceChildren(...data.webhooks.map(row));
    const off = data.webhooks.filter((e) => !e.enabled && e.disabled_reason);
    banner.textContent = off.length
      ? off.length + " webhook endpoint(s) were switched off after failing for days: " + off.map((e) => e.url).join(", ")
      : "";
  }

  async function load() {
    try {
      const cats = await call("GET", "categories");
      renderEventChoices(cats);
      await refresh();
      say("", true);
    } catch (err) { say(err.message, false); }
  }

  panel.replaceChildren(
    el("h2", {}, "Webhooks"), banner, message,
    el("p", { class: "muted" }, "Signed events (Standard Webhooks) about keys, the API switch, integration health and writes through keygate. " +
      "Changes made in the app's own UI do not pass through keygate and send no event."),
    el("div", { class: "row" }, urlBox, descBox),
    eventsBox,
    el("div", { class: "row" }, el("button", { id: "webhook-create", onclick: create }, "Add endpoint")),
    created,
    el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "Endpoint"), el("th", {}, "Events"), el("th", {}, "State"), el("th", {}, ""))), list),
    log);

  const connect = document.getElementById("connect");
  if (connect) connect.addEventListener("click", load);
  if (token()) load();
})();
