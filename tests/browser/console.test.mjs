// End-to-end test of the keygate web console in Debian's Chromium, driven by
// playwright-core (never downloads a browser), against a real `keygate serve` in
// front of a real upstream. Every flow's effect is checked on the gateway itself.
//
//   node --test tests/browser/console.test.mjs
//
// KEYGATE_BIN: the binary (default target/debug/keygate); CHROMIUM: the browser
// (default /usr/bin/chromium); KEYGATE_SCREENSHOTS=docs/console: also write the
// screenshots the README links to (always written to tests/browser/screenshots/).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync, readFileSync, mkdirSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import http from "node:http";
import { randomBytes, createHmac, timingSafeEqual } from "node:crypto";
import { chromium } from "playwright-core";
import { AxeBuilder } from "@axe-core/playwright";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "../..");
const BIN = process.env.KEYGATE_BIN || join(repo, "target/debug/keygate");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SHOTS = join(here, "screenshots");
const DOCS = process.env.KEYGATE_SCREENSHOTS ? resolve(repo, process.env.KEYGATE_SCREENSHOTS) : null;
const TOKEN = "browser-test-admin-token-" + randomBytes(8).toString("hex");
const SEAL = randomBytes(32).toString("base64");
const OPERATOR_SECRET = "operator-supplied-secret-0123456789abcdef";
const HASH_ONLY_KEY = "kg_hashonly000000000000000000000000000000";

let dir, upstream, receiver, gw, ctx, page;
const addr = {};

function startUpstream() {
  return new Promise((ok) => {
    const s = http.createServer((req, res) => {
      req.resume();
      const send = () => {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ ok: true, method: req.method, path: req.url }));
      };
      if (req.url.includes("/slow")) setTimeout(send, 2200);
      else send();
    });
    s.listen(0, "127.0.0.1", () => ok(s));
  });
}

// The webhook receiver: records every request (headers and body). While
// `receiver.failNext` is above 0 it answers 500 (and counts down), else 200.
function startReceiver() {
  return new Promise((ok) => {
    const got = [];
    const s = http.createServer((req, res) => {
      const chunks = [];
      req.on("data", (c) => chunks.push(c));
      req.on("end", () => {
        const fail = s.failNext > 0;
        if (fail) s.failNext -= 1;
        got.push({ path: req.url, headers: req.headers, body: Buffer.concat(chunks).toString("utf8"), answered: fail ? 500 : 200 });
        res.writeHead(fail ? 500 : 200, { "content-type": "text/plain" });
        res.end(fail ? "receiver says no" : "thanks");
      });
    });
    s.got = got;
    s.failNext = 0;
    s.listen(0, "127.0.0.1", () => ok(s));
  });
}

/// Waits until the receiver has a delivery whose body matches; returns it.
async function delivery(match, what) {
  const deadline = Date.now() + 15000;
  for (;;) {
    const d = receiver.got.find((r) => { try { return match(JSON.parse(r.body), r); } catch { return false; } });
    if (d) return d;
    if (Date.now() > deadline) throw new Error(`no ${what} delivery; got ${receiver.got.map((r) => r.body).join("\n")}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/// Standard Webhooks: v1,<base64 HMAC-SHA256 of "id.timestamp.body"> keyed with
/// the base64 part of the whsec_ secret.
function verifySignature(d, secret) {
  const id = d.headers["webhook-id"];
  const ts = d.headers["webhook-timestamp"];
  const sig = d.headers["webhook-signature"];
  assert.ok(id && ts && sig, "webhook-id, webhook-timestamp, webhook-signature: " + JSON.stringify(d.headers));
  assert.match(ts, /^\d+$/);
  assert.ok(Math.abs(Date.now() / 1000 - Number(ts)) < 300, "a fresh timestamp");
  assert.match(secret, /^whsec_[A-Za-z0-9+/=]+$/);
  const key = Buffer.from(secret.slice("whsec_".length), "base64");
  const want = createHmac("sha256", key).update(`${id}.${ts}.${d.body}`).digest();
  const ok = sig.split(" ").some((s) => {
    const [v, b64] = s.split(",");
    const got = Buffer.from(b64 || "", "base64");
    return v === "v1" && got.length === want.length && timingSafeEqual(got, want);
  });
  assert.ok(ok, `signature ${sig} matches the secret`);
}

function startGateway(upstreamPort) {
  writeFileSync(join(dir, "config.yaml"), `listen: "127.0.0.1:0"
upstream: "http://127.0.0.1:${upstreamPort}"
metrics:
  listen: "127.0.0.1:0"
admin:
  listen: "127.0.0.1:0"
keys_file: keys.yaml
state_dir: data
access_log:
  path: logs/access.log
rate_limit:
  per_key: { per_second: 1000, burst: 1000 }
webhooks:
  allow_private_targets: true
  retry_schedule: [1s, 2s]
routes:
  public: ["/healthz"]
  categories:
    candidates: ["/api/v1/candidates", "/api/v1/candidates/**"]
    jobs: ["/api/v1/jobs", "/api/v1/jobs/**"]
    applications: ["/api/v1/applications", "/api/v1/applications/**"]
`);
  const sha = (s) => createHashHex(s);
  writeFileSync(join(dir, "keys.yaml"), `api_enabled: true
keys:
  - id: koperator
    name: Zapier
    secret: "${OPERATOR_SECRET}"
    permissions: { candidates: read, jobs: read }
  - id: khashonly
    name: Old Reporting
    sha256: "${sha(HASH_ONLY_KEY)}"
    prefix: kg_hash
    permissions: { "*": read }
`);
  return new Promise((ok, fail) => {
    const child = spawn(BIN, ["-c", join(dir, "config.yaml"), "serve"], {
      env: { ...process.env, KEYGATE_ADMIN_TOKEN: TOKEN, KEYGATE_SEAL_KEY: SEAL, KEYGATE_LOG: "info" },
      stdio: ["ignore", "ignore", "pipe"],
    });
    let log = "";
    const timer = setTimeout(() => fail(new Error("keygate did not start:\n" + log)), 15000);
    child.stderr.on("data", (d) => {
      log += d;
      const m = /keygate is serving.*public_addr=(\S+).*metrics_addr=(\S+).*admin_addr=(\S+)/.exec(log);
      if (m && !addr.public) {
        [addr.public, addr.metrics, addr.admin] = [m[1], m[2], m[3]];
        clearTimeout(timer);
        ok(child);
      }
    });
    child.on("exit", (code) => fail(new Error(`keygate exited (${code}):\n${log}`)));
  });
}

import { createHash } from "node:crypto";
function createHashHex(s) { return createHash("sha256").update(s).digest("hex"); }

/// A data-plane request with a key; returns [status, error code].
async function data(key, path, method = "GET") {
  const headers = key ? { "X-API-Key": key } : {};
  const r = await fetch(`http://${addr.public}${path}`, { method, headers });
  const body = await r.text();
  let code = null;
  try { code = JSON.parse(body).error?.code ?? null; } catch { code = null; }
  return [r.status, code];
}

async function adminApi(method, path, body) {
  const r = await fetch(`http://${addr.admin}/admin/v1${path}`, {
    method,
    headers: { Authorization: `Bearer ${TOKEN}`, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  return r.status === 204 ? null : r.json();
}

async function axe(what) {
  const res = await new AxeBuilder({ page }).analyze();
  const bad = res.violations.filter((v) => v.impact === "critical" || v.impact === "serious");
  assert.deepEqual(
    bad.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).join(", ")})`),
    [],
    `axe-core on ${what}`,
  );
}

async function shot(name) {
  mkdirSync(SHOTS, { recursive: true });
  const file = join(SHOTS, name + ".png");
  await page.evaluate(() => document.activeElement && document.activeElement.blur());
  await page.screenshot({ path: file });
  if (DOCS) {
    mkdirSync(DOCS, { recursive: true });
    writeFileSync(join(DOCS, name + ".png"), readFileSync(file));
  }
}

const row = (name) => page.locator("#keys tr", { has: page.locator("strong", { hasText: new RegExp(`^${name}$`) }) });
const status = () => page.locator("#status");

async function waitForRecords(n) {
  const deadline = Date.now() + 10000;
  for (;;) {
    const v = await adminApi("GET", "/logs?limit=1000");
    if (v.records.length >= n) return;
    if (Date.now() > deadline) throw new Error(`only ${v.records.length} of ${n} records`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

before(async () => {
  assert.ok(existsSync(BIN), `build keygate first (cargo build): ${BIN}`);
  dir = mkdtempSync(join(tmpdir(), "keygate-browser-"));
  upstream = await startUpstream();
  receiver = await startReceiver();
  gw = await startGateway(upstream.address().port);
  ctx = await chromium.launchPersistentContext(join(dir, "chromium-profile"), {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
    viewport: { width: 1280, height: 900 },
  });
  await ctx.grantPermissions(["clipboard-read", "clipboard-write"], { origin: `http://${addr.admin}` });
  page = ctx.pages()[0] || (await ctx.newPage());
  page.on("pageerror", (e) => { throw e; });
});

after(async () => {
  if (ctx) await ctx.close();
  if (gw) { gw.removeAllListeners("exit"); gw.kill("SIGTERM"); }
  if (upstream) upstream.close();
  if (receiver) receiver.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("the console, flow by flow, against a real gateway", async (t) => {
  const cspViolations = [];
  page.on("console", (m) => { if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text()); });

  await t.test("before connecting, the API switch is disabled", async () => {
    await page.goto(`http://${addr.admin}/`);
    assert.equal(await page.locator("#api-toggle").isDisabled(), true);
    assert.equal((await page.locator("#api-state").textContent()).trim(), "not connected");
    await page.fill("#token", "wrong-token-0000000000000");
    await page.click("#connect");
    await page.waitForFunction(() => /wrong/.test(document.querySelector("#status").textContent));
    assert.equal(await page.locator("#api-toggle").isDisabled(), true);
  });

  await t.test("connect with the token in the URL fragment", async () => {
    await page.goto(`http://${addr.admin}/#token=${TOKEN}`);
    await page.waitForSelector("#keys tr");
    assert.equal(new URL(page.url()).hash, "", "the token leaves the address bar");
    assert.equal(await page.locator("#api-toggle").isDisabled(), false);
    assert.equal(await page.locator("#api-toggle").getAttribute("aria-checked"), "true");
    assert.match(await row("Zapier").textContent(), /operator secret/);
    assert.match(await row("Old Reporting").textContent(), /hash only/);
    await axe("API Keys");
  });

  await t.test("API switch: confirmation, then off (401 api_disabled), then on", async () => {
    assert.deepEqual(await data(OPERATOR_SECRET, "/api/v1/candidates"), [200, null]);
    await page.click("#api-toggle");
    await page.waitForSelector("#confirm-dialog[open]");
    assert.match(await page.locator("#confirm-text").textContent(), /refused with 401 api_disabled/);
    await axe("the confirmation");
    await page.click("#confirm-no");
    assert.equal(await page.locator("#api-toggle").getAttribute("aria-checked"), "true");
    assert.deepEqual(await data(OPERATOR_SECRET, "/api/v1/candidates"), [200, null]);
    await page.click("#api-toggle");
    await page.click("#confirm-yes");
    await page.waitForSelector('#api-toggle[aria-checked="false"]');
    assert.deepEqual(await data(OPERATOR_SECRET, "/api/v1/candidates"), [401, "api_disabled"]);
    await page.click("#api-toggle");
    await page.waitForSelector('#api-toggle[aria-checked="true"]');
    assert.deepEqual(await data(OPERATOR_SECRET, "/api/v1/candidates"), [200, null]);
  });

  let newKey;
  await t.test("create: validation next to the fields, levels per category", async () => {
    await page.click("#new-key");
    await page.waitForSelector("#key-dialog[open]");
    await page.fill("#f-rate", "abc");
    await page.fill("#f-burst", "-5");
    await page.click("#f-save");
    assert.match(await page.locator("#f-name-err").textContent(), /name/);
    assert.match(await page.locator("#f-perms-err").textContent(), /at least one permission/);
    assert.match(await page.locator("#f-rate-err").textContent(), /whole number/);
    assert.match(await page.locator("#f-burst-err").textContent(), /whole number/);
    assert.equal(await page.locator("#key-dialog[open]").count(), 1, "nothing was sent");
    await axe("the create dialog with errors");
    await shot("create-dialog-1280");
    await page.fill("#f-name", "zapier");
    await page.check("#perm-candidates-write");
    await page.check("#perm-jobs-read");
    await page.fill("#f-rate", "");
    await page.fill("#f-burst", "");
    await page.click("#f-save");
    await page.waitForFunction(() => /already exists/.test(document.querySelector("#f-name-err").textContent));
    assert.match(await page.locator("#f-name-err").textContent(), /a key named Zapier already exists/);
    await page.fill("#f-name", "Interview Tool");
    await page.fill("#f-rate", "50");
    await page.fill("#f-burst", "100");
    await page.click("#f-save");
    await page.waitForSelector("#created-dialog[open]");
    newKey = (await page.locator("#created-key").textContent()).trim();
    assert.match(newKey, /^kg_[A-Za-z0-9]{38}$/);
    await page.click("#created-copy");
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), newKey, "copied");
    await page.click("#created-close");
    // The dialog's close event (which clears the key) is dispatched after close() returns.
    await page.waitForFunction(() => document.querySelector("#created-key").textContent === "");
    assert.equal(await page.locator("#created-dialog[open]").count(), 0, "shown once");
    await row("Interview Tool").waitFor();
    assert.deepEqual(await data(newKey, "/api/v1/candidates"), [200, null]);
    assert.deepEqual(await data(newKey, "/api/v1/candidates", "POST"), [200, null], "write and delete");
    assert.deepEqual(await data(newKey, "/api/v1/jobs", "POST"), [403, "insufficient_permission"], "read only");
    assert.deepEqual(await data(newKey, "/api/v1/applications"), [403, "insufficient_permission"], "none");
  });

  await t.test("ASSIGN ALL sets every category", async () => {
    await page.click("#new-key");
    await page.fill("#f-name", "Everything Reader");
    await page.selectOption("#f-all", "read");
    await page.click("#f-all-apply");
    for (const c of ["candidates", "jobs", "applications"]) {
      assert.equal(await page.isChecked(`#perm-${c}-read`), true, c);
    }
    await page.click("#f-save");
    await page.waitForSelector("#created-dialog[open]");
    const key = (await page.locator("#created-key").textContent()).trim();
    await page.click("#created-close");
    for (const p of ["/api/v1/candidates", "/api/v1/jobs", "/api/v1/applications"]) {
      assert.deepEqual(await data(key, p), [200, null], p);
    }
  });

  await t.test("copy from the list, reveal for a few seconds and hide", async () => {
    const r = row("Interview Tool");
    const masked = (await r.locator("code").textContent()).trim();
    assert.ok(masked.endsWith("••••••••") && masked.startsWith(newKey.slice(0, 7)), masked);
    await r.locator("button.copy").click();
    await page.waitForFunction(() => /copied/.test(document.querySelector("#status").textContent));
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), newKey);
    await r.locator("button.reveal").click();
    await page.waitForFunction(() => document.querySelector("#status").textContent.includes("Showing"));
    assert.equal((await r.locator("code").textContent()).trim(), newKey);
    assert.equal(await r.locator("button.reveal").getAttribute("aria-pressed"), "true");
    await r.locator("button.reveal").click();
    assert.equal((await r.locator("code").textContent()).trim(), masked, "hidden again");
    // The operator's secret is revealable; a hash-only key says why it is not.
    await row("Zapier").locator("button.reveal").click();
    await page.waitForFunction((s) => document.querySelector("#keys").textContent.includes(s), OPERATOR_SECRET);
    await row("Zapier").locator("button.reveal").click();
    await row("Old Reporting").locator("button.reveal").click();
    assert.match(await status().textContent(), /cannot be revealed.*seal key/);
  });

  await t.test("view permissions", async () => {
    await row("Interview Tool").locator("button.view-perms").click();
    await page.waitForSelector("#perms-dialog[open]");
    const text = await page.locator("#perms-body").textContent();
    assert.match(text, /candidatesWrite and Delete/);
    assert.match(text, /jobsRead/);
    assert.match(text, /applicationsNone/);
    assert.match(await page.locator("#perms-rate").textContent(), /50 per second, burst 100/);
    await axe("the permissions dialog");
    await page.click("#perms-close");
  });

  await t.test("edit: name and permissions, in force at once (200 → 403)", async () => {
    const r = row("Interview Tool");
    await r.locator("button.more").click();
    await r.locator('[role="menuitem"]', { hasText: "Edit" }).click();
    await page.waitForSelector("#key-dialog[open]");
    assert.equal(await page.inputValue("#f-name"), "Interview Tool");
    assert.equal(await page.isChecked("#perm-candidates-write"), true);
    assert.equal(await page.inputValue("#f-rate"), "50", "the rate limit is kept");
    await page.fill("#f-name", "Interview Tool v2");
    await page.check("#perm-candidates-none");
    await page.click("#f-save");
    await row("Interview Tool v2").waitFor();
    assert.deepEqual(await data(newKey, "/api/v1/candidates"), [403, "insufficient_permission"]);
    assert.deepEqual(await data(newKey, "/api/v1/jobs"), [200, null]);
  });

  await t.test("delete with confirmation (→ 401)", async () => {
    const r = row("Interview Tool v2");
    await r.locator("button.more").click();
    await r.locator('[role="menuitem"]', { hasText: "Delete" }).click();
    await page.waitForSelector("#confirm-dialog[open]");
    await page.click("#confirm-yes");
    await r.waitFor({ state: "detached" });
    assert.deepEqual(await data(newKey, "/api/v1/jobs"), [401, "invalid_api_key"]);
    assert.match(await status().textContent(), /deleted/);
  });

  await t.test("search keys by name", async () => {
    await page.fill("#key-search", "READER");
    await page.waitForFunction(() => document.querySelectorAll("#keys tr").length === 1);
    assert.match(await page.locator("#keys").textContent(), /Everything Reader/);
    await page.fill("#key-search", "no such key");
    await page.waitForSelector("#keys-empty:not([hidden])");
    await page.fill("#key-search", "");
    await page.waitForFunction(() => document.querySelectorAll("#keys tr").length === 3);
  });

  await t.test("screenshots of API Keys", async () => {
    await shot("keys-1280");
    await page.setViewportSize({ width: 390, height: 844 });
    await shot("keys-390");
    await axe("API Keys at 390 px");
    await page.setViewportSize({ width: 1280, height: 900 });
  });

  await t.test("logs: reason, live path search, method filter, paging, slow mark, chart", async () => {
    const before = (await adminApi("GET", "/logs?limit=1000")).records.length;
    for (let i = 0; i < 30; i++) await data(OPERATOR_SECRET, "/api/v1/Candidates/" + i);
    for (let i = 0; i < 25; i++) await data(OPERATOR_SECRET, "/api/v1/jobs", "POST");
    await data(null, "/api/v1/jobs");
    await data("kg_wrongwrongwrongwrongwrongwrongwrongwro", "/api/v1/jobs");
    await data(OPERATOR_SECRET, "/api/v1/jobs/slow");
    await waitForRecords(before + 58);
    await page.click("#tab-logs");
    await page.waitForSelector("#logs tr");
    assert.equal(await page.locator("#keys-panel").isHidden(), true);
    assert.equal(await page.locator("#logs tr").count(), 50, "one page");
    const first = await page.locator("#logs tr").first().textContent();
    assert.match(first, /\/api\/v1\/jobs\/slow/, "newest first");
    assert.match(first, /slow/);
    assert.equal(await page.locator("#logs tr .slow").count(), 1, "the slow mark: " + first);
    assert.match(await page.locator("#logs").textContent(), /missing_api_key/);
    assert.match(await page.locator("#logs").textContent(), /insufficient_permission|invalid_api_key|malformed_api_key/);
    // The chart: bars by status class.
    await page.waitForFunction(() => document.querySelectorAll("#chart rect").length > 0);
    assert.match(await page.locator("#chart-summary").textContent(), /2xx: \d+.*4xx: \d+/);
    await axe("API Logs");
    await shot("logs-1280");
    await page.setViewportSize({ width: 390, height: 844 });
    await shot("logs-390");
    await axe("API Logs at 390 px");
    await page.setViewportSize({ width: 1280, height: 900 });
    // Paging by the opaque cursor.
    const page1 = await page.locator("#logs").textContent();
    await page.click("#logs-older");
    await page.waitForFunction((p) => document.querySelector("#logs").textContent !== p, page1);
    const n2 = await page.locator("#logs tr").count();
    assert.ok(n2 > 0 && n2 <= 50, `page 2 has ${n2}`);
    assert.equal(await page.locator("#logs-newest").isVisible(), true);
    await page.click("#logs-newest");
    await page.waitForFunction((p) => document.querySelector("#logs").textContent === p, page1);
    // Live path search, ignoring case: no button to press.
    await page.fill("#log-path", "CANDIDATES");
    await page.waitForFunction(() => {
      const rows = Array.from(document.querySelectorAll("#logs tr"));
      return rows.length > 0 && rows.every((r) => /candidates/i.test(r.cells[0].textContent));
    });
    // The method dropdown applies at once.
    await page.fill("#log-path", "");
    await page.selectOption("#log-method", "POST");
    await page.waitForFunction(() => {
      const rows = Array.from(document.querySelectorAll("#logs tr"));
      return rows.length >= 25 && rows.every((r) => r.cells[2].textContent === "POST");
    });
    // Status class and empty state.
    await page.selectOption("#log-status", "5xx");
    await page.waitForSelector("#logs-empty:not([hidden])");
    assert.match(await page.locator("#logs-empty").textContent(), /No request matches/);
    await page.selectOption("#log-status", "");
    await page.selectOption("#log-method", "");
  });

  await t.test("webhooks: add an endpoint, secret once, signed test event, log, disable, key.created, delete", async () => {
    const shown = page.evaluate(() => new Promise((ok) => document.addEventListener("keygate:tab", (e) => ok(e.detail.panel), { once: true })));
    await page.click("#tab-webhooks");
    assert.equal(await shown, "webhooks-panel");
    assert.equal(await page.locator("#webhooks-panel").isVisible(), true);
    assert.equal(await page.locator("#logs-panel").isHidden(), true);
    await page.waitForSelector("#webhooks-empty:not([hidden])");
    await axe("Webhooks, empty");
    const hookUrl = `http://127.0.0.1:${receiver.address().port}/hooks/keygate`;
    const whRow = () => page.locator("#webhooks tr", { has: page.locator("code.wh-url", { hasText: hookUrl }) });

    // The form opens from the toolbar; validation next to the fields: nothing is sent.
    assert.equal(await page.locator("#webhook-form").isHidden(), true);
    await page.click("#webhook-new");
    assert.equal(await page.locator("#webhook-new").getAttribute("aria-expanded"), "true");
    assert.equal(await page.evaluate(() => document.activeElement.id), "webhook-url", "focus in the form");
    await page.click("#webhook-create");
    assert.match(await page.locator("#webhook-url-err").textContent(), /URL/);
    assert.match(await page.locator("#webhook-events-err").textContent(), /at least one event/);
    assert.equal((await adminApi("GET", "/webhooks")).webhooks.length, 0, "nothing was added");

    // Add: the labels name the fields; the secret is shown once, with a copy button.
    await page.getByLabel("Endpoint URL").fill(hookUrl);
    await page.getByLabel("Description").fill("Browser test receiver");
    await page.getByLabel("key.*", { exact: true }).check();
    await page.getByLabel("webhook.test", { exact: true }).check();
    await page.click("#webhook-create");
    await page.waitForSelector("#webhook-created:not([hidden]) #webhook-secret");
    assert.equal(await page.locator("#webhook-form").isHidden(), true, "the form closes");
    const secret = (await page.locator("#webhook-secret").textContent()).trim();
    assert.match(secret, /^whsec_/);
    assert.match(await page.locator("#webhooks-status").textContent(), /is added/);
    await page.click("#webhook-secret-copy");
    await page.waitForFunction(() => /copied/.test(document.querySelector("#webhooks-status").textContent));
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), secret, "copied");
    await whRow().waitFor();
    assert.match(await whRow().textContent(), /key\.\*, webhook\.test/);
    assert.match(await whRow().textContent(), /enabled/);
    const [ep] = (await adminApi("GET", "/webhooks")).webhooks;
    assert.deepEqual([ep.url, ep.events, ep.enabled, ep.description], [hookUrl, ["key.*", "webhook.test"], true, "Browser test receiver"]);
    assert.equal(JSON.stringify(ep).includes(secret.slice(6)), false, "the list never shows the secret");
    await axe("Webhooks, the new secret");
    await page.click("#webhook-secret-done");
    assert.equal(await page.locator("#webhook-secret").count(), 0, "shown once");

    // A test event: the receiver answers 500 once, so it is retried (1 s), then delivered, signed.
    receiver.failNext = 1;
    await whRow().locator("button.test").click();
    await page.waitForFunction(() => /webhook\.test event is queued/.test(document.querySelector("#webhooks-status").textContent));
    const test1 = await delivery((b, r) => b.type === "webhook.test" && r.answered === 200, "webhook.test");
    verifySignature(test1, secret);
    const tries = receiver.got.filter((r) => r.headers["webhook-id"] === test1.headers["webhook-id"]);
    assert.equal(tries.length, 2, "one failed attempt, one retry, under the same webhook-id");
    assert.equal(test1.path, "/hooks/keygate");
    // The delivery log in the UI: the retry and the success.
    await page.waitForSelector("#webhook-log:not([hidden])");
    await page.waitForFunction((id) => {
      const rows = Array.from(document.querySelectorAll("#webhook-deliveries tr"));
      const mine = rows.filter((r) => r.textContent.includes(id));
      return mine.some((r) => /delivered/.test(r.textContent) && /200/.test(r.textContent)) &&
        mine.some((r) => /retrying/.test(r.textContent) && /500/.test(r.textContent));
    }, test1.headers["webhook-id"], { timeout: 15000 });
    assert.match(await page.locator("#webhook-log-title").textContent(), /Deliveries to .*hooks\/keygate/);
    await axe("Webhooks, the delivery log");

    // Disable: no delivery; enable again.
    await whRow().locator("button.toggle").click();
    await page.waitForFunction(() => /is disabled/.test(document.querySelector("#webhooks-status").textContent));
    assert.match(await whRow().locator(".wh-state").textContent(), /^disabled/);
    assert.equal((await adminApi("GET", "/webhooks")).webhooks[0].enabled, false);
    assert.equal(await whRow().locator("button.toggle").textContent(), "Enable");
    await whRow().locator("button.toggle").click();
    await page.waitForFunction(() => /is enabled/.test(document.querySelector("#webhooks-status").textContent));
    assert.equal((await adminApi("GET", "/webhooks")).webhooks[0].enabled, true);
    assert.match(await whRow().locator(".wh-state").textContent(), /^enabled/);

    // A key made in the API Keys tab: key.created arrives, signed, without the key.
    await page.click("#tab-keys");
    await page.click("#new-key");
    await page.waitForSelector("#key-dialog[open]");
    await page.fill("#f-name", "Webhook Watcher");
    await page.check("#perm-jobs-read");
    await page.click("#f-save");
    await page.waitForSelector("#created-dialog[open]");
    const watcherKey = (await page.locator("#created-key").textContent()).trim();
    await page.click("#created-close");
    const made = await delivery((b) => b.type === "key.created" && b.data.key?.name === "Webhook Watcher", "key.created");
    verifySignature(made, secret);
    assert.equal(made.body.includes(watcherKey), false, "never the key itself");
    const watcher = (await adminApi("GET", "/keys?limit=100")).keys.find((k) => k.name === "Webhook Watcher");
    assert.ok(watcher, "the key exists");
    await adminApi("DELETE", `/keys/${watcher.id}`);
    await delivery((b) => b.type === "key.deleted" && b.data.key?.id === watcher.id, "key.deleted");

    // Back on the tab, the log shows key.created too; screenshots at 1280 and 390 px.
    await page.click("#tab-webhooks");
    await whRow().waitFor();
    await whRow().locator("button.log").click();
    await page.waitForFunction(() => /key\.created/.test(document.querySelector("#webhook-deliveries")?.textContent || ""), null, { timeout: 15000 });
    await axe("Webhooks");
    await shot("webhooks-1280");
    await page.setViewportSize({ width: 390, height: 844 });
    await axe("Webhooks at 390 px");
    await shot("webhooks-390");
    await page.setViewportSize({ width: 1280, height: 900 });

    // Delete with confirmation: Cancel keeps it, Delete removes it.
    await whRow().locator("button.delete").click();
    await page.waitForSelector("#confirm-dialog[open]");
    assert.match(await page.locator("#confirm-text").textContent(), /hooks\/keygate.*deleted/);
    await page.click("#confirm-no");
    assert.equal((await adminApi("GET", "/webhooks")).webhooks.length, 1, "kept");
    await whRow().locator("button.delete").click();
    await page.waitForSelector("#confirm-dialog[open]");
    await page.click("#confirm-yes");
    await whRow().waitFor({ state: "detached" });
    await page.waitForSelector("#webhooks-empty:not([hidden])");
    assert.match(await page.locator("#webhooks-status").textContent(), /is deleted/);
    assert.equal((await adminApi("GET", "/webhooks")).webhooks.length, 0);
    assert.equal(await page.locator("#webhook-log").isHidden(), true, "its log is closed");
    await page.click("#tab-keys");
  });

  await t.test("a broken keys file: a banner with the error and what is enforced", async () => {
    const good = readFileSync(join(dir, "keys.yaml"), "utf8");
    writeFileSync(join(dir, "keys.yaml"), "keys: [broken\n");
    await page.reload();
    await page.waitForSelector("#keys-banner:not([hidden])");
    const text = await page.locator("#keys-banner").textContent();
    assert.match(text, /does not load/);
    assert.match(text, /keys\.yaml/);
    assert.match(text, /last good keys \(3 keys\), API on/);
    assert.deepEqual(await data(OPERATOR_SECRET, "/api/v1/candidates"), [200, null], "still enforced");
    await axe("the broken-file banner");
    await shot("broken-keys-file-1280");
    writeFileSync(join(dir, "keys.yaml"), good);
    await page.reload();
    await page.waitForSelector("#keys tr");
    await page.waitForSelector("#keys-banner", { state: "hidden" });
  });

  assert.deepEqual(cspViolations, [], "no CSP violation");
});
