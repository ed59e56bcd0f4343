// @ts-check
// The web apps end to end, in a real headless Chromium (Debian's, driven by
// playwright-core): a driver app and a rider page in two browser contexts, with
// granted and scripted geolocation, against a real `understudy serve`. Run by
// cmd/understudy's TestWebApps* (see there for the environment), which fails on this
// script's exit code and shows its output.
//
//   SCENARIO=trip      a whole trip, a reload of both mid-trip, the operator's map,
//                      the sign-in screens
//   SCENARIO=failover  a trip whose region is killed (KILL_PID) mid-trip: both apps
//                      follow the region that takes over (FOLLOW_REGION) and finish
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

// playwright-core as .ci pins it (PLAYWRIGHT: its folder; the tests pass .ci's).
/** @type {typeof import("playwright-core")} */
const { chromium } = await import(process.env.PLAYWRIGHT ? pathToFileURL(join(process.env.PLAYWRIGHT, "index.mjs")).href : "playwright-core");

const env = (/** @type {string} */ k) => {
  const v = process.env[k];
  if (!v) throw new Error("missing environment variable " + k);
  return v;
};
const scenario = env("SCENARIO");
const shots = env("SHOTS");
const at = { latitude: Number(env("AT_LAT")), longitude: Number(env("AT_LNG")) };
const patience = 60_000;
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-gpu"],
});
/** @type {import("playwright-core").Page[]} */
const pages = [];
let step = "start";

/** @param {string} s */
function log(s) {
  step = s;
  console.log(new Date().toISOString().slice(11, 23), s);
}

/**
 * A phone: 360x740, geolocation granted at p.
 * @param {{latitude: number, longitude: number}} p
 */
async function phone(p) {
  const ctx = await browser.newContext({
    viewport: { width: 360, height: 740 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
    geolocation: { ...p, accuracy: 8 }, permissions: ["geolocation"], locale: "en-US",
  });
  const page = await ctx.newPage();
  page.on("console", (m) => { if (m.type() === "error") console.log("  [console]", m.text()); });
  page.on("pageerror", (e) => console.log("  [pageerror]", e.message));
  pages.push(page);
  return { ctx, page };
}

/** @param {import("playwright-core").Page} page @param {string} name */
async function shot(page, name) {
  await page.waitForTimeout(150); // the canvas draws on the next frame
  await page.screenshot({ path: join(shots, name + ".png") });
}

/**
 * Waits until sel's attribute attr is value.
 * @param {import("playwright-core").Page} page @param {string} sel @param {string} attr @param {string} value
 */
async function attr(page, sel, attr, value) {
  await page.waitForFunction(([s, a, v]) => document.querySelector(s)?.getAttribute(a) === v, [sel, attr, value], { timeout: patience });
}

/** @param {import("playwright-core").Page} page @param {string} sel @param {RegExp} re */
async function text(page, sel, re) {
  await page.locator(sel).filter({ hasText: re }).first().waitFor({ timeout: patience });
}

/** Signs a driver in, online and available at the point. @param {string} link */
async function driverAvailable(link) {
  const d = await phone(at);
  await d.page.goto(link);
  await text(d.page, "#conn", /Connected/);
  return d;
}

/** The rider asks for a ride from where it is to a tap on the map. @param {string} link @param {boolean} [screens] */
async function riderRequests(link, screens = false) {
  const r = await phone({ latitude: at.latitude + 0.0008, longitude: at.longitude + 0.0006 });
  await r.page.goto(link);
  await text(r.page, "#conn", /Connected/);
  if (screens) await shot(r.page, "rider-1-start");
  await r.page.click("#here");
  await text(r.page, "#pickup", /\d/);
  const box = await r.page.locator("#map").boundingBox();
  if (!box) throw new Error("no map");
  await r.page.mouse.click(box.x + box.width / 2 + 90, box.y + box.height / 2 + 110); // the dropoff
  await text(r.page, "#dropoff", /\d/);
  await r.page.locator("#estimate").waitFor({ state: "visible", timeout: patience });
  if (screens) await shot(r.page, "rider-2-estimate");
  await r.page.click("#request");
  await r.page.locator("#ride").waitFor({ state: "visible", timeout: patience });
  return r;
}

/** @param {import("playwright-core").Page} page @param {boolean} [screens] */
async function accept(page, screens = false) {
  await page.locator("#offer").waitFor({ state: "visible", timeout: patience });
  await text(page, "#offer-count", /\d+ s/);
  if (screens) await shot(page, "driver-3-offer");
  await page.click("#accept");
  await attr(page, "#trip", "data-status", "matched");
}

/** The driver's next trip step, and the status both then show. */
async function stepTo(/** @type {import("playwright-core").Page} */ driver, /** @type {import("playwright-core").Page} */ rider, /** @type {string} */ status) {
  await driver.click("#step");
  if (status !== "completed") await attr(driver, "#trip", "data-status", status);
  await attr(rider, "#ride", "data-status", status);
}

async function trip() {
  log("sign-in screens: no token, an expired one, a refused one");
  const anon = await phone(at);
  await anon.page.goto(env("BASE") + "/driver/");
  await anon.page.locator("#signin").waitFor({ state: "visible" });
  await shot(anon.page, "driver-0-signin");
  await anon.page.goto(env("EXPIRED_LINK"));
  await attr(anon.page, "#signin", "data-trouble", "expired");
  await text(anon.page, "#signin-why", /expired/);
  await anon.page.goto(env("FORGED_LINK"));
  await attr(anon.page, "#signin", "data-trouble", "refused");
  await anon.ctx.close();

  log("the driver signs in by link and goes available");
  const d = await driverAvailable(env("DRIVER_LINK"));
  await shot(d.page, "driver-1-offline");
  await d.page.click("#toggle");
  await attr(d.page, "#toggle", "data-state", "available");
  await shot(d.page, "driver-2-available");

  log("the rider picks a pickup (its location) and a dropoff (a tap), sees the estimate, requests");
  const r = await riderRequests(env("RIDER_LINK"), true);
  await shot(r.page, "rider-3-searching");

  log("the driver gets the offer and accepts");
  await accept(d.page, true);
  await shot(d.page, "driver-4-to-pickup");
  await attr(r.page, "#ride", "data-status", "matched");

  log("the driver drives towards the pickup: the rider sees it come");
  await d.ctx.setGeolocation({ latitude: at.latitude + 0.0004, longitude: at.longitude + 0.0003, accuracy: 8 });
  await text(r.page, "#ride-driver-at", /away/);
  await text(r.page, "#ride-driver", /d-42/);
  await shot(r.page, "rider-4-driver-coming");

  log("both reload mid-trip and resume");
  await d.page.reload();
  await attr(d.page, "#trip", "data-status", "matched");
  await text(d.page, "#conn", /Connected/);
  await r.page.reload();
  await attr(r.page, "#ride", "data-status", "matched");

  log("arrived, start, complete");
  await stepTo(d.page, r.page, "arrived");
  await stepTo(d.page, r.page, "in_progress");
  await shot(d.page, "driver-5-on-trip");
  await shot(r.page, "rider-5-on-the-way");
  await stepTo(d.page, r.page, "completed");
  await d.page.locator("#trip").waitFor({ state: "hidden", timeout: patience });
  await text(d.page, "#pay-trips", /^1$/);
  await shot(d.page, "driver-6-paid");
  await shot(r.page, "rider-6-completed");

  log("the operator's map shows the driver available again");
  const o = await phone(at);
  await o.page.setViewportSize({ width: 360, height: 740 });
  await o.page.goto(env("ADMIN_LINK"));
  await text(o.page, "#totals", /1 available/);
  await shot(o.page, "ops-1-map");

  log("Korean text");
  await d.page.click("#lang");
  await text(d.page, "#toggle", /운행/);
  await shot(d.page, "driver-7-korean");
  await d.page.click("#lang");

  log("the driver signs out");
  await d.page.click("#signout");
  await d.page.locator("#signin").waitFor({ state: "visible" });
}

async function failover() {
  const follow = env("FOLLOW_REGION");
  log("a driver and a rider in the area of the region that will be killed");
  const d = await driverAvailable(env("DRIVER_LINK"));
  await d.page.click("#toggle");
  await attr(d.page, "#toggle", "data-state", "available");
  const r = await riderRequests(env("RIDER_LINK"));
  await accept(d.page);
  await attr(r.page, "#ride", "data-status", "matched");
  await shot(d.page, "failover-1-driver-before");

  await d.page.evaluate(() => navigator.serviceWorker.ready.then(() => true)); // the shell is kept

  log("kill -9 of the region serving them (pid " + env("KILL_PID") + ")");
  process.kill(Number(env("KILL_PID")), "SIGKILL");
  await text(d.page, "#conn", /Reconnecting/);
  await shot(d.page, "failover-2-driver-reconnecting");

  log("the driver app finds the region that took over, and resumes its ride there");
  const far = { timeout: 120_000 };
  await d.page.locator("#conn").filter({ hasText: new RegExp("Connected to " + follow) }).waitFor(far);
  await attr(d.page, "#trip", "data-status", "matched");
  await shot(d.page, "failover-3-driver-after");

  log("a reload while the region that served the page is dead: the service worker's shell, then the successor");
  await d.page.reload();
  await d.page.locator("#conn").filter({ hasText: new RegExp("Connected to " + follow) }).waitFor(far);
  await attr(d.page, "#trip", "data-status", "matched");

  log("the driver arrives and starts the trip at the new region: the rider page follows");
  await d.page.click("#step");
  await attr(d.page, "#trip", "data-status", "arrived");
  await r.page.waitForFunction(() => document.querySelector("#ride")?.getAttribute("data-status") === "arrived", null, far);
  await text(r.page, "#conn", new RegExp("Connected to " + follow));
  await stepTo(d.page, r.page, "in_progress");
  await shot(r.page, "failover-4-rider-after");
  await stepTo(d.page, r.page, "completed");
  await text(d.page, "#pay-trips", /^1$/);

  log("the operator's map at another region: the dead region, who serves its area; an area moved in one action");
  const o = await phone(at);
  await o.page.goto(env("ADMIN_LINK"));
  await attr(o.page, "#regions tr[data-region=east]", "data-up", "false");
  await attr(o.page, "#areas tr[data-area=busan]", "data-served-by", follow);
  await shot(o.page, "ops-2-region-down");
  await o.page.selectOption("#areas tr[data-area=jongno] select", "south");
  await o.page.click("#areas tr[data-area=jongno] button");
  await attr(o.page, "#areas tr[data-area=jongno]", "data-served-by", "south");
  await text(o.page, "#banner", /moved to south/);
}

let failed = false;
try {
  await (scenario === "trip" ? trip() : scenario === "failover" ? failover() : Promise.reject(new Error("unknown SCENARIO " + scenario)));
  log("ok");
} catch (err) {
  failed = true;
  console.log("FAILED at step: " + step + "\n" + (err instanceof Error ? err.stack || err.message : String(err)));
  for (const [i, p] of pages.entries()) {
    try {
      await p.screenshot({ path: join(shots, "failed-" + i + ".png") });
      console.log("  page " + i + " " + p.url().replace(/#token=.*/, "#token=…") + ": " +
        (await p.locator("body").innerText()).replace(/\s+/g, " ").slice(0, 400));
    } catch { /* closed */ }
  }
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
