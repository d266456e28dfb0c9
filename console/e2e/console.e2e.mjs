// The console end to end in a real Chromium (playwright-core driving
// Debian's chromium), against a running host with real pushed streams.
// Started by tests/it/console.rs, which set up the host and checks storage
// afterwards. Prints one JSON line: the objects deleted through the console.
//
// env: BASE_URL, TOKEN (operator), DOMAIN_TOKEN (of localhost), SHOTS
//      (screenshot dir), PLUGIN_A, PLUGIN_B (.wasm),
//      CHROMIUM (default /usr/bin/chromium)

import { mkdirSync, readFileSync } from "node:fs";
import { chromium } from "playwright-core";

const { BASE_URL, TOKEN, DOMAIN_TOKEN, SHOTS, PLUGIN_A, PLUGIN_B } = process.env;
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
mkdirSync(SHOTS, { recursive: true });

const problems = [];
// The errors the browser is meant to log: the refusals this test provokes
// (a wrong token's 401, validation 400s), each only while it is provoked.
let expected = null;
const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu"] });
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: BASE_URL });
const page = await context.newPage();
page.on("console", (m) => {
  if (m.type() !== "error") return;
  if (expected && m.text().includes(`status of ${expected}`)) return;
  problems.push(`console error: ${m.text()}`);
});
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
page.on("dialog", (d) => d.accept());
page.setDefaultTimeout(20_000);

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
}
async function shot(name) {
  await page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
}
async function api(path) {
  const r = await fetch(`${BASE_URL}${path}`, { headers: { Authorization: `Bearer ${TOKEN}` } });
  return r.json();
}
const step = (s) => console.error(`e2e: ${s}`);

// Sign in: a wrong token is refused in place, the right one opens the console.
step("sign in");
await page.goto(`${BASE_URL}/console/`);
await page.getByLabel("Access token").fill("not-a-token");
expected = 401;
await page.getByRole("button", { name: "Sign in" }).click();
await page.getByText("This token is not valid.").waitFor();
expected = null;
await shot("01-sign-in");
// A domain token sees its domain only; the operator sees every domain.
await page.getByLabel("Access token").fill(DOMAIN_TOKEN);
await page.keyboard.press("Enter");
await page.locator("header").waitFor({ state: "visible" });
check(JSON.stringify(await page.locator("#domain option").allTextContents()) === '["localhost"]', "a domain token's picker shows its domain only");
await page.getByRole("button", { name: "Sign out" }).click();
await page.getByLabel("Access token").fill(TOKEN);
await page.keyboard.press("Enter");
await page.locator("header").waitFor({ state: "visible" });
const domains = await page.locator("#domain option").allTextContents();
check(domains.includes("localhost") && domains.includes("other.example"), `the operator's picker shows every domain (${domains})`);
await page.locator("#domain").selectOption("localhost");

// Snapshot settings: a validation error next to its field, then add, edit, delete.
step("templates");
await page.getByRole("link", { name: "Snapshot settings" }).click();
await page.locator("#templates").waitFor();
await page.getByLabel("App name").fill("e2e");
await page.getByLabel("Interval (s, 5–3600)").fill("2");
expected = 400;
await page.getByRole("button", { name: "Add" }).click();
const intervalError = page.locator("#f-time_interval-err");
await intervalError.filter({ hasText: /5/ }).waitFor();
expected = null;
check((await page.getByLabel("Interval (s, 5–3600)").getAttribute("aria-invalid")) === "true", "the interval field is marked invalid");
await shot("02-template-validation");
await page.getByLabel("Interval (s, 5–3600)").fill("10");
await page.getByRole("button", { name: "Add" }).click();
await page.locator('tr[data-app="e2e"]').filter({ hasText: "10 s" }).waitFor();
await page.getByRole("button", { name: "Edit e2e" }).click();
await page.getByLabel("Interval (s, 5–3600)").fill("20");
await page.getByLabel("Skip blank keyframes").check();
await page.getByLabel("Width (0: source)").fill("320");
await page.getByLabel("Storyboard (s, 0: none)").fill("3600");
// WebP needs .webp names: the API's refusal lands next to the overwrite object's field.
await page.getByLabel("Format").selectOption("webp");
expected = 400;
await page.getByRole("button", { name: "Save" }).click();
await page.locator("#f-overwrite_object-err").filter({ hasText: /\.webp/ }).waitFor();
expected = null;
await page.getByLabel("Overwrite object").fill("{AppName}/{StreamName}.webp");
await page.getByLabel("Sequence object").fill("{AppName}/{StreamName}/{UnixTimestamp}.webp");
await page.getByRole("button", { name: "Save" }).click();
await page.locator('tr[data-app="e2e"]').filter({ hasText: "20 s" }).filter({ hasText: "skipped" }).filter({ hasText: "WEBP 320×auto" }).waitFor();
const saved = await api("/v1/domains/localhost/snapshot-configs/e2e");
check(saved.skip_blank === true && saved.format === "webp" && saved.width === 320 && saved.height === 0 && saved.storyboard === 3600, `skip_blank, format and size saved through the console (${JSON.stringify(saved)})`);
await shot("03-templates");
await page.getByRole("button", { name: "Delete e2e" }).click();
await page.locator('tr[data-app="e2e"]').waitFor({ state: "detached" });

// Snapshot management: browse a pushed stream, open one, batch-delete 3.
step("snapshots");
await page.getByRole("link", { name: "Snapshots" }).click();
await page.getByLabel("App", { exact: true }).fill("live");
await page.getByLabel("Stream").fill("cam");
await page.locator("#streams option[value=cam1]").waitFor({ state: "attached" });
await page.getByLabel("Stream").fill("cam1");
await page.getByRole("button", { name: "Show" }).click();
const tiles = page.locator(".tile[data-id]");
await tiles.nth(5).waitFor();
const listed = await api(`/v1/domains/localhost/snapshots?app=live&stream=cam1&start_time=2000-01-01T00:00:00Z&end_time=2100-01-01T00:00:00Z&limit=100`);
const sequential = listed.snapshots.filter((s) => !s.is_overlay);
check(sequential.length >= 5, `at least 5 sequential snapshots of cam1 (${sequential.length})`);
// Every thumbnail is a real picture from the host.
await page.waitForFunction(() => [...document.querySelectorAll(".tile img")].every((i) => i.complete && i.naturalWidth > 0));
// Thumbnails are the host's scaled copies (the snapshots are 1280x720).
const thumbWidths = await page.evaluate(() => [...document.querySelectorAll(".tile img")].map((i) => i.naturalWidth));
check(thumbWidths.every((w) => w === 320), `thumbnails are 320 px wide: ${thumbWidths}`);
const first = sequential[0];
await page.locator(`.tile[data-id="${first.id}"] img`).focus();
await page.keyboard.press("Enter");
const dialog = page.locator("dialog[open]");
await dialog.waitFor();
await page.waitForFunction(() => { const i = document.querySelector("dialog[open] img"); return i && i.complete && i.naturalWidth > 0; });
check((await dialog.textContent()).includes(first.object), "the preview shows the object key");
check((await dialog.locator("img").evaluate((i) => i.naturalWidth)) === 1280, "the preview is the full picture");
await dialog.getByRole("button", { name: "Copy URL" }).click();
const copied = await page.evaluate(() => navigator.clipboard.readText().catch(() => ""));
check(copied === "" || copied.includes(`/snapshots/${first.id}.jpg?`), `the copied URL is the signed image URL (${copied})`);
await shot("04-preview");
await dialog.getByRole("button", { name: "Close" }).click();
// One time zone on every page: UTC chosen, the grid and the preview both say so.
await page.locator("#zone").selectOption("utc");
await tiles.nth(5).waitFor();
const tileTime = await page.locator(`.tile[data-id="${first.id}"] time`).textContent();
const utcText = new Date(first.create_timestamp).toISOString().slice(0, 19).replace("T", " ") + " UTC";
check(tileTime === utcText, `the grid shows UTC with its zone: ${tileTime} (want ${utcText})`);
await page.locator(`.tile[data-id="${first.id}"] img`).click();
await dialog.waitFor();
const detailTime = await dialog.locator("dd").nth(1).textContent();
check(detailTime.startsWith(utcText.slice(0, 19)) && detailTime.endsWith(" UTC"), `the preview's time is in the same zone: ${detailTime}`);
await dialog.getByRole("button", { name: "Close" }).click();
await page.locator("#zone").selectOption("local");
await tiles.nth(5).waitFor();
const localTime = await page.locator(`.tile[data-id="${first.id}"] time`).textContent();
check(/ (UTC|GMT[+-]?\d*|[A-Z]{2,5})$/.test(localTime), `local times name their zone too: ${localTime}`);
// Deleting keeps files unless asked, as the API and the CLI do; here we ask.
check(!(await page.locator("#remove-files").isChecked()), "\"Also remove files\" is off by default");
await page.locator("#remove-files").check();
const doomed = sequential.slice(1, 4);
for (const s of doomed) await page.locator(`.tile[data-id="${s.id}"] input[type=checkbox]`).check();
await shot("05-snapshots");
await page.getByRole("button", { name: "Delete selected" }).click();
await page.locator("#delete-results").waitFor();
check((await page.locator("#delete-results td.good").count()) === 3, "three per-item OK results");
for (const s of doomed) await page.locator(`.tile[data-id="${s.id}"]`).waitFor({ state: "detached" });
await shot("06-deleted");

// More than a page: scrolling to the end loads the next one.
await page.getByLabel("Stream").fill("many");
await page.getByRole("button", { name: "Show" }).click();
await page.locator(".tile[data-id]").nth(59).waitFor();
check((await page.locator(".tile[data-id]").count()) === 60, "the first page holds 60");
await page.locator(".sentinel").scrollIntoViewIfNeeded();
await page.locator(".tile[data-id]").nth(64).waitFor();
// The second page continues the first: every capture once, down to the first.
const captions = await page.locator(".tile .meta span").allTextContents();
const numbers = new Set(captions.filter((c) => c.startsWith("many #")));
check(captions.length === 65 && numbers.size === 64 && numbers.has("many #0") && numbers.has("many #63"), `64 captures and the latest, none twice: ${captions}`);

// The live wall: a tile per live stream whose image refreshes.
step("wall");
await page.getByRole("link", { name: "Live wall" }).click();
for (const s of ["live/wall1", "live/wall2"]) await page.locator(`.tile[data-stream="${s}"] img[src]`).waitFor();
const img = page.locator('.tile[data-stream="live/wall1"] img');
const before = await img.getAttribute("data-created");
await page.waitForFunction((b) => document.querySelector('.tile[data-stream="live/wall1"] img')?.dataset.created !== b, before, { timeout: 30_000 });
await page.waitForFunction(() => [...document.querySelectorAll("#wall img[src]")].every((i) => i.complete && i.naturalWidth > 0));
// Each tile tells the stream's health as ingest measures it (25 fps, GOP 1 s, from the pusher's address).
await page.waitForFunction(() => /25 fps · GOP 1\.0 s · keyframe .* ago · from 127\.0\.0\.1:\d+/.test(document.querySelector('.tile[data-stream="live/wall1"] .health')?.textContent ?? ""), null, { timeout: 30_000 });
// The wall's publishers push an 11 s clip again and again, each push its own
// publish: a click in a clip's last GOP finds the stream ended before its next
// keyframe (503, shown as an error), and the user clicks again.
expected = 503;
for (let attempt = 1; ; attempt++) {
  await page.locator('.tile[data-stream="live/wall2"]').getByRole("button", { name: "Snapshot now" }).click();
  const taken = page.getByText("Snapshot of live/wall2 taken");
  const ended = page.getByText(/ended before its next keyframe/);
  await taken.or(ended).first().waitFor({ timeout: 30_000 });
  if (await taken.isVisible()) break;
  check(attempt < 3, "Snapshot now on live/wall2 found the stream ending three times");
  await ended.first().waitFor({ state: "hidden", timeout: 30_000 }).catch(() => {});
}
expected = null;
await shot("07-wall");

// Plugins: upload two, activate, roll back.
step("plugins");
await page.getByRole("link", { name: "Plugins" }).click();
await page.locator("#plugin-file").setInputFiles(PLUGIN_A);
await page.getByText(/^Accepted /).waitFor();
const versions = await api("/v1/domains/localhost/plugins");
const a = versions.versions[0].version;
await page.getByRole("button", { name: `Activate ${a.slice(0, 12)}` }).click();
await page.locator("#active-version", { hasText: a.slice(0, 12) }).waitFor();
// The second one by drag and drop onto the drop zone.
const bytes = [...readFileSync(PLUGIN_B)];
const dropped = await page.evaluateHandle((b) => {
  const dt = new DataTransfer();
  dt.items.add(new File([new Uint8Array(b)], "plugin-b.wasm", { type: "application/wasm" }));
  return dt;
}, bytes);
await page.locator("#upload-status").evaluate((e) => (e.textContent = ""));
await page.dispatchEvent("#drop", "drop", { dataTransfer: dropped });
await page.getByText(/^Accepted /).waitFor();
const b = (await api("/v1/domains/localhost/plugins")).versions.map((v) => v.version).find((v) => v !== a);
// A is of contract 1.0.0, B of 1.1.0: each row says which.
for (const [v, contract] of [[a, "1.0.0"], [b, "1.1.0"]]) {
  await page.locator(`tr[data-version="${v}"] td.contract`, { hasText: contract }).waitFor({ timeout: 5_000 });
}
await page.getByRole("button", { name: `Activate ${b.slice(0, 12)}` }).click();
await page.locator("#active-version", { hasText: b.slice(0, 12) }).waitFor();
await page.getByRole("button", { name: `Roll back to ${a.slice(0, 12)}` }).click();
await page.locator("#active-version", { hasText: a.slice(0, 12) }).waitFor();
check((await api("/v1/domains/localhost/plugins")).active === a, "rolled back through the API's state");
await shot("08-plugins");

// Sources: a URL holding credentials is refused next to its field; a
// camera that does not answer is listed backing off with its error; deleted.
step("sources");
await page.getByRole("link", { name: "Sources" }).click();
await page.getByLabel(/^URL/).fill("rtsp://admin:pw@127.0.0.1:9/cam");
await page.getByLabel("Stream", { exact: true }).fill("door");
expected = 400;
await page.getByRole("button", { name: "Add" }).click();
await page.locator("#f-url-err", { hasText: "must not hold credentials" }).waitFor();
expected = null;
await page.getByLabel(/^URL/).fill("rtsp://127.0.0.1:9/cam");
await page.getByRole("button", { name: "Add" }).click();
await page.locator('tr[data-source="cams/door"] .state', { hasText: "backoff" }).waitFor({ timeout: 20_000 });
await page.locator('tr[data-source="cams/door"] td.bad', { hasText: /./ }).waitFor();
// The wall shows it too, with its state and error.
await page.getByRole("link", { name: "Live wall" }).click();
await page.locator('#sources-not-live [data-source="cams/door"]', { hasText: "backoff" }).waitFor({ timeout: 10_000 });
await page.getByRole("link", { name: "Sources" }).click();
await page.locator('tr[data-source="cams/door"]').waitFor();
check((await api("/v1/domains/localhost/sources")).sources[0].state === "backoff", "the API says backoff too");
await shot("08-sources");
await page.getByRole("button", { name: "Delete cams/door" }).click();
await page.getByText(/^No source\./).waitFor();
check((await api("/v1/domains/localhost/sources")).sources.length === 0, "deleted through the API's state");

// Notify: a bad URL is refused next to its field; failed deliveries listed.
step("notify");
await page.getByRole("link", { name: "Notify" }).click();
await page.getByLabel("Notify URL").fill("http://[");
expected = 400;
await page.getByRole("button", { name: "Save" }).click();
await page.locator("#f-notify_url-err").filter({ hasText: /./ }).waitFor();
expected = null;
await page.getByText(/^\d+ failed deliveries$/).waitFor();
await shot("09-notify");

// A phone's width: nothing wider than the screen.
step("phone");
await page.setViewportSize({ width: 390, height: 844 });
await page.getByRole("link", { name: "Snapshots" }).click();
await page.locator(".tile[data-id]").first().waitFor();
const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
check(overflow <= 1, `no horizontal scrolling at 390 px (${overflow} px too wide)`);
await shot("10-phone");
// The templates table keeps its column labels where its header row is hidden.
await page.getByRole("link", { name: "Snapshot settings" }).click();
const firstCell = page.locator("#templates tbody tr td").first();
await firstCell.waitFor();
const shown = (i) =>
  page.locator("#templates tbody tr td").nth(i).evaluate((td) => [td.dataset.label, getComputedStyle(td, "::before").content, getComputedStyle(td.closest("table").querySelector("thead")).display]);
const [label, content, thead] = await shown(0);
check(thead === "none" && label === "App" && !["none", "normal", ""].includes(content), `a phone shows each cell's column label: ${label} ${content} (header ${thead})`);
const [label2] = await shown(1);
check(label2 === "Interval", `and the next column's: ${label2}`);
await shot("11-phone-templates");

await browser.close();
if (problems.length) throw new Error(problems.join("\n"));
console.log(JSON.stringify({ deleted: doomed.map((s) => s.object), kept: sequential.filter((s) => !doomed.includes(s)).map((s) => s.object) }));
