// @ts-check
// The rider page: the rider HTTP API of the client contract (docs/rider-api.md) from a
// browser. Pickup and dropoff on a map, the estimate, a request whose Idempotency-Key
// survives reloads, the ride's event stream read with fetch (the token in a header,
// resumed with Last-Event-ID), the driver coming, cancel. Follows 421 wrong_region and,
// when its region is lost, the region that took over.
import {
  $, addText, api, banner, backoff, claims, distance, learnRegions, metres, money, newKey, Problem, regionName,
  showSignIn, signOut, sleep, store, successorOf, t, takeToken, toggleLang, tokenTrouble, translate,
} from "../shared/core.js";
import { PlainMap, tileURL } from "../shared/map.js";

/** @typedef {import("../shared/core.js").Ride} Ride */
/** @typedef {import("../shared/core.js").Point} Point */

addText({
  en: {
    title: "Ride", pickup: "Pickup", dropoff: "Dropoff", here: "Pick me up here", reset: "Start over",
    request: "Request a ride", cancel: "Cancel ride", again: "Book another ride", driver: "Driver", driver_at: "Driver is",
    tap_pickup: "Tap the map where you want to be picked up", tap_dropoff: "Now tap the map where you are going",
    tap_ready: "Tap the map to move the dropoff", eta: "Nearest driver about {min} min away · {dist} trip",
    no_eta: "No driver near right now · {dist} trip", away: "{dist} away",
    s_searching: "Finding you a driver…", s_matched: "A driver is on the way", s_arrived: "Your driver is here",
    s_in_progress: "On your way", s_completed: "You have arrived. Thank you!", s_cancelled: "Ride cancelled",
    s_no_driver: "No driver was found. Please try again.", requesting: "Requesting…",
    connected: "Connected to {region}", disconnected: "Reconnecting to {region}…", moved: "Now served by region {region}",
    outside: "Pickup is outside the service area", gps_denied: "Location is off: tap the map instead",
  },
  ko: {
    title: "택시 호출", pickup: "출발지", dropoff: "도착지", here: "현재 위치에서 타기", reset: "다시 선택",
    request: "택시 호출하기", cancel: "호출 취소", again: "다시 호출하기", driver: "기사", driver_at: "기사 위치",
    tap_pickup: "지도에서 탈 곳을 누르세요", tap_dropoff: "이제 지도에서 도착지를 누르세요",
    tap_ready: "지도를 누르면 도착지가 바뀝니다", eta: "가장 가까운 기사 약 {min}분 · 이동 {dist}",
    no_eta: "지금 주변에 기사가 없습니다 · 이동 {dist}", away: "{dist} 떨어져 있음",
    s_searching: "기사를 찾는 중…", s_matched: "기사가 오고 있습니다", s_arrived: "기사가 도착했습니다",
    s_in_progress: "이동 중", s_completed: "도착했습니다. 감사합니다!", s_cancelled: "호출이 취소되었습니다",
    s_no_driver: "기사를 찾지 못했습니다. 다시 시도하세요.", requesting: "호출 중…",
    connected: "{region} 리전에 연결됨", disconnected: "{region} 리전에 다시 연결 중…", moved: "이제 {region} 리전이 서비스합니다",
    outside: "출발지가 서비스 지역 밖입니다", gps_denied: "위치 사용이 꺼져 있습니다: 지도를 누르세요",
  },
});

const role = "rider";
const token = takeToken(role);
const main = $("app");
let base = store.get(role + ".base") || location.origin;
/** @type {Point | null} */
let pickup = null;
/** @type {Point | null} */
let dropoff = null;
/** @type {Ride | null} */
let ride = null;
let up = true;
/** @type {PlainMap} */
let map;
/** @type {AbortController | null} */
let following = null;
const final = ["completed", "cancelled", "no_driver"];

async function start() {
  $("lang").onclick = () => { toggleLang(); render(); };
  $("signout").onclick = () => { signOut(role); following?.abort(); location.replace(location.pathname); };
  translate();
  const trouble = tokenTrouble(token, ["rider", "admin"]);
  if (trouble) {
    showSignIn(trouble, main);
    $("signout").hidden = trouble === "none";
    return;
  }
  main.hidden = false;
  map = new PlainMap(/** @type {HTMLCanvasElement} */ ($("map")), { center: { lat: 37.5665, lng: 126.978 }, zoom: 14, tiles: await tileURL() });
  map.onTap = (p) => {
    if (ride) return;
    if (!pickup) pickup = p; else dropoff = p;
    plan();
  };
  $("zoom-in").onclick = () => map.setZoom(map.zoom + 1);
  $("zoom-out").onclick = () => map.setZoom(map.zoom - 1);
  $("here").onclick = locate;
  $("reset").onclick = () => { pickup = dropoff = null; plan(); };
  $("request").onclick = () => request();
  $("cancel").onclick = cancel;
  $("again").onclick = () => {
    store.del(role + ".ride");
    ride = null;
    dropoff = null;
    plan();
  };
  learnRegions(base);
  // After a reload: the ride being followed, or the request that was in flight (sent
  // again with its key: the server answers the same ride, never a second one).
  /** @type {{id: string, base: string} | null} */
  const kept = store.getJSON(role + ".ride");
  /** @type {{key: string, body: {pickup: Point, dropoff: Point}} | null} */
  const pending = store.getJSON(role + ".key");
  if (kept) {
    base = kept.base;
    follow(kept.id);
  } else if (pending) {
    pickup = pending.body.pickup;
    dropoff = pending.body.dropoff;
    request();
  }
  render();
}

function locate() {
  if (!("geolocation" in navigator)) return;
  navigator.geolocation.getCurrentPosition((p) => {
    pickup = { lat: p.coords.latitude, lng: p.coords.longitude };
    map.center = pickup;
    map.setZoom(15);
    plan();
  }, () => banner(t("gps_denied")), { enableHighAccuracy: true, timeout: 15000 });
}

/** The points changed: draw them and ask for the estimate. */
async function plan() {
  render();
  if (!pickup || !dropoff) return;
  const body = { pickup, dropoff };
  try {
    const est = await call("/v1/estimates", { method: "POST", body });
    $("est-fare").textContent = money(est.fare);
    $("est-more").textContent = est.pickup_eta_s === null
      ? t("no_eta", { dist: distance(est.distance_m) })
      : t("eta", { min: Math.max(1, Math.round(est.pickup_eta_s / 60)), dist: distance(est.distance_m) });
    $("estimate").hidden = false;
  } catch (err) {
    $("estimate").hidden = true;
    if (err instanceof Problem) banner(err.code === "outside_service_area" ? t("outside") : err.message);
  }
}

/**
 * Calls the API at the rider's region, following 421 wrong_region to the region it
 * names and, when the region does not answer, the region that took over its areas.
 * @param {string} path
 * @param {{method?: string, body?: unknown, headers?: Record<string, string>}} [o]
 */
async function call(path, o = {}) {
  for (let tries = 0; ; tries++) {
    try {
      const v = await api(base, path, { ...o, token });
      setUp(true);
      return v;
    } catch (err) {
      if (err instanceof Problem) {
        if (err.status === 401) { showSignIn(tokenTrouble(token, ["rider", "admin"]) || "refused", main); throw err; }
        if (err.status === 421 && err.code === "wrong_region" && err.body.url && tries < 3) {
          moveTo(String(err.body.url));
          continue;
        }
        if ((err.status === 503 || err.status === 429) && tries < 20) { await sleep(1000); continue; }
        throw err;
      }
      setUp(false);
      if (tries >= 1) {
        const next = await successorOf(base);
        if (next) moveTo(next);
      }
      if (tries > 30) throw err;
      await sleep(backoff(Math.min(tries, 4), 4000));
    }
  }
}

/** @param {string} url */
function moveTo(url) {
  url = url.replace(/\/$/, "");
  if (url === base) return;
  base = url;
  store.set(role + ".base", base);
  if (ride) store.setJSON(role + ".ride", { id: ride.id, base });
  banner(t("moved", { region: regionName(base) }), true);
}

/** Requests the ride; the key is kept until the ride is known, so a reload or a retry books it once. */
async function request() {
  if (!pickup || !dropoff) return;
  /** @type {{key: string, body: {pickup: Point, dropoff: Point}} | null} */
  let pending = store.getJSON(role + ".key");
  const body = { pickup, dropoff };
  if (!pending || JSON.stringify(pending.body) !== JSON.stringify(body)) {
    pending = { key: newKey(), body };
    store.setJSON(role + ".key", pending);
  }
  $("request").setAttribute("disabled", "");
  $("request").textContent = t("requesting");
  try {
    /** @type {Ride} */
    const r = await call("/v1/rides", { method: "POST", body, headers: { "Idempotency-Key": pending.key } });
    store.del(role + ".key");
    show(r);
    follow(r.id);
  } catch (err) {
    if (err instanceof Problem && err.status !== 401) {
      store.del(role + ".key");
      banner(err.code === "outside_service_area" ? t("outside") : err.message);
    }
  } finally {
    $("request").textContent = t("request");
    render();
  }
}

/** @param {Ride} r */
function show(r) {
  ride = r;
  pickup = r.pickup;
  dropoff = r.dropoff;
  if (final.includes(r.status)) store.del(role + ".ride");
  else store.setJSON(role + ".ride", { id: r.id, base });
  render();
}

/**
 * Follows the ride's event stream until a final status: fetch (the token in a
 * header, never in a URL), resumed with Last-Event-ID after a drop, at the region
 * that serves the ride now.
 * @param {string} id
 */
async function follow(id) {
  following?.abort();
  const ctl = new AbortController();
  following = ctl;
  let lastID = "";
  let waits = 0; // 503s and 429s in a row: an area changing hands, or a busy region
  for (let tries = 0; !ctl.signal.aborted; ) {
    /** @type {Record<string, string>} */
    const headers = { Authorization: "Bearer " + token, Accept: "text/event-stream" };
    if (lastID) headers["Last-Event-ID"] = lastID;
    try {
      const resp = await fetch(base + "/v1/rides/" + encodeURIComponent(id) + "/events", { headers, signal: ctl.signal, cache: "no-store" });
      if (resp.status === 204) { // it has the final state: read it once
        show(await call("/v1/rides/" + encodeURIComponent(id)));
        return;
      }
      if (!resp.ok) {
        /** @type {any} */
        const p = await resp.json().catch(() => ({}));
        if (resp.status === 421 && p.url) { moveTo(String(p.url)); continue; }
        if (resp.status === 401) { showSignIn(tokenTrouble(token, ["rider", "admin"]) || "refused", main); return; }
        if (resp.status === 404) { // not this region's ride (any more): ask who serves it
          const next = await successorOf(base);
          if (next) { moveTo(next); continue; }
          store.del(role + ".ride");
          ride = null;
          render();
          return;
        }
        if ((resp.status === 503 || resp.status === 429) && waits++ < 60) {
          // The region a 421 named is still taking the area over (no_lease), or asks
          // for a pause: wait as it says, then ask it again.
          await sleep(1000 * Math.max(1, Number(resp.headers.get("Retry-After")) || 1), ctl.signal);
          continue;
        }
        throw new Error("events: HTTP " + resp.status);
      }
      setUp(true);
      tries = 0;
      waits = 0;
      if (!resp.body) throw new Error("no stream");
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let end;
        while ((end = buf.indexOf("\n\n")) >= 0) {
          const ev = parseEvent(buf.slice(0, end));
          buf = buf.slice(end + 2);
          if (!ev.data) continue;
          /** @type {Ride} */
          const r = JSON.parse(ev.data);
          if (ev.id) lastID = ev.id;
          if (ev.type === "location" && ride) {
            ride.driver = r.driver;
            render();
          } else {
            show(r);
          }
          if (final.includes(r.status)) return;
        }
      }
    } catch (err) {
      if (ctl.signal.aborted) return;
      setUp(false);
      if (++tries >= 2) {
        const next = await successorOf(base);
        if (next) moveTo(next);
      }
      await sleep(backoff(Math.min(tries, 4), 4000), ctl.signal);
    }
  }
}

/** @param {string} block */
function parseEvent(block) {
  const ev = { type: "message", id: "", data: "" };
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const i = line.indexOf(":");
    const field = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
    if (field === "event") ev.type = value;
    else if (field === "id") ev.id = value;
    else if (field === "data") ev.data += (ev.data ? "\n" : "") + value;
  }
  return ev;
}

async function cancel() {
  if (!ride) return;
  try {
    show(await call("/v1/rides/" + encodeURIComponent(ride.id) + "/cancel", { method: "POST" }));
  } catch (err) {
    if (err instanceof Problem) banner(err.message);
  }
}

/** @param {boolean} v */
function setUp(v) {
  if (up !== v) { up = v; render(); }
}

/** @param {Point | null} p */
function fmt(p) {
  return p ? p.lat.toFixed(5) + ", " + p.lng.toFixed(5) : "—";
}

function render() {
  const me = token ? claims(token) : null;
  $("who").textContent = t("title") + (me ? " · " + me.sub : "");
  $("dot").className = "dot " + (up ? "up" : "down");
  $("conn").textContent = t(up ? "connected" : "disconnected", { region: regionName(base) });
  $("pickup").textContent = fmt(pickup);
  $("dropoff").textContent = fmt(dropoff);
  $("hint").textContent = ride ? "" : !pickup ? t("tap_pickup") : !dropoff ? t("tap_dropoff") : t("tap_ready");
  const active = ride !== null && !final.includes(ride.status);
  $("plan").hidden = active || (ride !== null && final.includes(ride.status));
  $("request").toggleAttribute("disabled", !pickup || !dropoff || active);
  $("ride").hidden = !ride;
  if (ride) {
    $("ride").dataset.status = ride.status;
    $("ride-title").textContent = t("s_" + ride.status);
    $("ride-fare").textContent = money(ride.fare);
    $("ride-driver").textContent = ride.driver ? ride.driver.id : "—";
    const loc = ride.driver?.location;
    $("ride-driver-at").textContent = loc ? t("away", { dist: distance(metres(loc, ride.pickup)) }) : "—";
    $("cancel").hidden = !["searching", "matched", "arrived"].includes(ride.status);
    $("again").hidden = !final.includes(ride.status);
  }
  if (!map) return;
  /** @type {import("../shared/map.js").Marker[]} */
  const ms = [];
  if (pickup) ms.push({ ...pickup, color: "#0a7d2c", label: t("pickup") });
  if (dropoff) ms.push({ ...dropoff, color: "#b3261e", label: t("dropoff") });
  const loc = ride && !final.includes(ride.status) ? ride.driver?.location : null;
  if (loc) ms.push({ ...loc, color: "#0b4f9c", label: t("driver"), ring: true });
  map.markers = ms;
  map.redraw();
}

start();
