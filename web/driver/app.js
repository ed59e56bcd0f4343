// @ts-check
// The driver app: the driver websocket of the client contract (docs/driver-protocol.md)
// from a browser. Sign-in by link, location from the browser, offers, trip steps, pay;
// reconnects and resumes from the welcome, follows `reconnect` frames and, when its
// region is lost, the region that took over (GET /v1/regions).
import {
  $, addText, api, banner, backoff, claims, distance, learnRegions, metres, money, Problem, regionName, showSignIn,
  signOut, store, successorOf, t, takeToken, toggleLang, tokenTrouble, translate,
} from "../shared/core.js";

/** @typedef {import("../shared/core.js").Ride} Ride */
/** @typedef {import("../shared/core.js").Point} Point */
/**
 * @typedef {{offer_id: string, ride_id: string, pickup: Point, dropoff: Point,
 *   fare: import("../shared/core.js").Money, expires_at: string, pickup_distance_m?: number}} Offer
 */

addText({
  en: {
    title: "Driver", go_available: "Go available", go_offline: "Go offline", busy: "On a ride",
    offer_title: "New ride", to_pickup: "To pickup", pickup: "Pickup", dropoff: "Dropoff", rider: "Rider",
    accept: "Accept", decline: "Decline", today: "Today", trips_n: "Trips", earned: "Earned",
    st_offline: "Offline", st_available: "Available: waiting for a ride", st_offered: "Ride offered",
    st_en_route: "Driving to pickup", st_on_trip: "On trip",
    trip_matched: "Drive to the pickup", trip_arrived: "Waiting for the rider", trip_in_progress: "Drive to the dropoff",
    step_arrived: "I have arrived", step_start: "Rider on board: start", step_complete: "Complete trip",
    nav_pickup: "Navigate to pickup", nav_dropoff: "Navigate to dropoff",
    connected: "Connected to {region}", disconnected: "Reconnecting to {region}…", moved: "Moved to region {region}",
    gps_wait: "Waiting for your location…", gps_ok: "Location ±{acc}", gps_denied: "Location is off: allow it for this site to get rides",
    need_gps: "Waiting for your location before going available",
    cancelled: "The rider cancelled the ride", completed: "Trip complete: {fare}", replaced: "Signed in on another device or tab. Reload to use this one.",
    missed: "You missed several offers and were set offline", help: "Keep this page open while you drive. Add it to your home screen to open it like an app.",
  },
  ko: {
    title: "기사", go_available: "운행 시작", go_offline: "운행 종료", busy: "운행 중",
    offer_title: "새 콜", to_pickup: "픽업까지", pickup: "출발지", dropoff: "도착지", rider: "승객",
    accept: "수락", decline: "거절", today: "오늘", trips_n: "운행", earned: "수입",
    st_offline: "오프라인", st_available: "대기 중: 콜을 기다립니다", st_offered: "콜 도착",
    st_en_route: "픽업 장소로 이동 중", st_on_trip: "운행 중",
    trip_matched: "픽업 장소로 이동하세요", trip_arrived: "승객을 기다리는 중", trip_in_progress: "도착지로 이동하세요",
    step_arrived: "도착했습니다", step_start: "승객 탑승: 출발", step_complete: "운행 완료",
    nav_pickup: "출발지 길안내", nav_dropoff: "도착지 길안내",
    connected: "{region} 리전에 연결됨", disconnected: "{region} 리전에 다시 연결 중…", moved: "{region} 리전으로 이동함",
    gps_wait: "위치를 확인하는 중…", gps_ok: "위치 ±{acc}", gps_denied: "위치 사용이 꺼져 있습니다: 콜을 받으려면 이 사이트의 위치를 허용하세요",
    need_gps: "위치를 확인한 뒤 운행을 시작합니다",
    cancelled: "승객이 호출을 취소했습니다", completed: "운행 완료: {fare}", replaced: "다른 기기나 탭에서 로그인했습니다. 이 화면을 쓰려면 새로고침하세요.",
    missed: "콜을 여러 번 놓쳐 오프라인으로 바뀌었습니다", help: "운전하는 동안 이 화면을 열어 두세요. 홈 화면에 추가하면 앱처럼 열 수 있습니다.",
  },
});

const role = "driver";
const token = takeToken(role);
const main = $("app");
/** @type {string} */
let base = store.get(role + ".base") || location.origin;

/** The socket and what it told. */
/** @type {WebSocket | null} */
let ws = null;
let welcomed = false;
let attempt = 0;
let failedDials = 0;
/** @type {string | null} */
let moveTo = null;
let replaced = false;
/** @type {string} */
let state = "offline";
/** @type {Ride | null} */
let ride = null;
/** @type {Offer | null} */
let offer = null;
/** What the driver asked for: "available" or "offline"; kept across reloads. */
let want = store.get(role + ".want") || "offline";

/** @type {{lat: number, lng: number, heading?: number, speed?: number, accuracy: number} | null} */
let pos = null;
let gpsDenied = false;
/** The contract's rate: a location every 1 to 5 s. */
const locationEvery = 3000;

/** @type {AudioContext | null} */
let audio = null;
/** @type {WakeLockSentinel | null} */
let wake = null;

function start() {
  $("lang").onclick = () => { toggleLang(); render(); };
  $("signout").onclick = () => {
    signOut(role);
    ws?.close(1000);
    location.replace(location.pathname);
  };
  translate();
  const trouble = tokenTrouble(token, ["driver"]);
  if (trouble) {
    showSignIn(trouble, main);
    $("signout").hidden = trouble === "none";
    return;
  }
  main.hidden = false;
  $("toggle").onclick = toggle;
  $("accept").onclick = () => { if (offer) send({ type: "accept", offer_id: offer.offer_id }); };
  $("decline").onclick = () => {
    if (offer) send({ type: "decline", offer_id: offer.offer_id });
    offer = null;
    render();
  };
  $("step").onclick = step;
  watchLocation();
  setInterval(sendLocation, locationEvery);
  setInterval(renderCountdown, 250);
  setInterval(loadPay, 60000);
  document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") keepAwake(); });
  if ("serviceWorker" in navigator) navigator.serviceWorker.register("sw.js").catch(() => {});
  connect();
  loadPay();
  render();
}

/** The socket URL of the region at b. @param {string} b */
function socketURL(b) {
  return b.replace(/^http/, "ws") + "/v1/driver/ws";
}

function connect() {
  if (replaced || !token) return;
  welcomed = false;
  let opened = false;
  const s = new WebSocket(socketURL(base), ["bearer." + token]);
  ws = s;
  s.onopen = () => { opened = true; failedDials = 0; };
  s.onmessage = (e) => {
    /** @type {any} */
    let m;
    try { m = JSON.parse(String(e.data)); } catch { return; }
    onFrame(m);
  };
  s.onclose = (e) => {
    if (ws !== s) return;
    ws = null;
    welcomed = false;
    render();
    onClose(e.code, opened);
  };
}

/** @param {number} code @param {boolean} opened */
async function onClose(code, opened) {
  if (code === 4000) { // another connection for this driver is the live one
    replaced = true;
    banner(t("replaced"));
    return;
  }
  if (moveTo) { // the `reconnect` frame: dial the region it names at once
    base = moveTo;
    moveTo = null;
    store.set(role + ".base", base);
    attempt = 0;
    banner(t("moved", { region: regionName(base) }), true);
    connect();
    return;
  }
  if (!opened) {
    failedDials++;
    // A browser does not show why a handshake failed: ask a pay route with the token.
    try {
      await api(base, "/v1/driver/earnings", { token });
    } catch (err) {
      if (err instanceof Problem && (err.status === 401 || err.status === 403)) {
        showSignIn(err.status === 401 ? (tokenTrouble(token, ["driver"]) || "refused") : "role", main);
        return;
      }
      if (!(err instanceof Problem) && failedDials >= 2) {
        const next = await successorOf(base);
        if (next && next !== base) {
          base = next;
          store.set(role + ".base", base);
          failedDials = 0;
          attempt = 0;
          banner(t("moved", { region: regionName(base) }), true);
        }
      }
    }
  }
  setTimeout(connect, backoff(attempt++));
}

/** @param {any} m */
function onFrame(m) {
  switch (m.type) {
    case "welcome":
      welcomed = true;
      attempt = 0;
      state = m.state;
      ride = m.ride || null;
      if (state !== "offered") offer = null;
      store.set(role + ".base", base);
      learnRegions(base);
      sendLocation();
      if (want === "available" && state === "offline" && pos) send({ type: "available", ref: "available" });
      break;
    case "offer":
      offer = m;
      state = "offered";
      alertDriver();
      break;
    case "assigned":
      offer = null;
      ride = m.ride;
      state = "en_route";
      break;
    case "offer_revoked":
      if (offer && offer.offer_id === m.offer_id) {
        offer = null;
        if (state === "offered") state = "available";
      }
      break;
    case "ride":
      ride = m.ride;
      if (ride && ride.status === "in_progress") state = "on_trip";
      if (ride && ride.status === "completed") {
        banner(t("completed", { fare: money(ride.fare) }), true);
        ride = null;
        state = "available";
        loadPay();
      } else if (ride && (ride.status === "cancelled" || ride.status === "no_driver")) {
        ride = null;
        state = "available";
      }
      break;
    case "ride_cancelled":
      ride = null;
      state = "available";
      banner(t("cancelled"));
      loadPay();
      break;
    case "ack":
      if (m.ref === "available" && state === "offline") state = "available";
      if (m.ref === "offline") state = "offline";
      break;
    case "state":
      state = m.state;
      if (m.state === "offline") {
        want = "offline";
        store.set(role + ".want", want);
        if (m.reason === "missed_offers") banner(t("missed"));
      }
      break;
    case "reconnect":
      moveTo = String(m.url).replace(/\/$/, "");
      break;
    case "error":
      if (m.ref !== "location") banner(m.message || m.code);
      break;
  }
  keepAwake();
  render();
}

/** @param {Record<string, unknown>} frame */
function send(frame) {
  if (ws && ws.readyState === WebSocket.OPEN && welcomed) ws.send(JSON.stringify(frame));
}

function sendLocation() {
  if (!pos) return;
  /** @type {Record<string, unknown>} */
  const f = { type: "location", lat: pos.lat, lng: pos.lng, ts: new Date().toISOString() };
  if (pos.heading !== undefined && pos.heading >= 0 && pos.heading <= 360) f.heading = pos.heading;
  if (pos.speed !== undefined && pos.speed >= 0 && pos.speed <= 150) f.speed = pos.speed;
  send(f);
}

function watchLocation() {
  if (!("geolocation" in navigator)) { gpsDenied = true; return; }
  navigator.geolocation.watchPosition((p) => {
    const first = !pos;
    const c = p.coords;
    pos = { lat: c.latitude, lng: c.longitude, accuracy: c.accuracy };
    if (c.heading !== null && !Number.isNaN(c.heading)) pos.heading = c.heading;
    if (c.speed !== null && !Number.isNaN(c.speed)) pos.speed = c.speed;
    gpsDenied = false;
    if (first) {
      sendLocation();
      if (want === "available" && state === "offline") send({ type: "available", ref: "available" });
    }
    render();
  }, (err) => {
    gpsDenied = err.code === err.PERMISSION_DENIED;
    render();
  }, { enableHighAccuracy: true, maximumAge: 5000, timeout: 20000 });
}

function toggle() {
  unlockAudio();
  if (state === "offline") {
    want = "available";
    store.set(role + ".want", want);
    if (!pos) { banner(t("need_gps"), true); render(); return; }
    sendLocation();
    send({ type: "available", ref: "available" });
  } else if (state === "available" || state === "offered") {
    want = "offline";
    store.set(role + ".want", want);
    offer = null;
    send({ type: "offline", ref: "offline" });
  }
  keepAwake();
  render();
}

function step() {
  if (!ride) return;
  const next = { matched: "arrived", arrived: "start", in_progress: "complete" }[ride.status];
  if (next) send({ type: next, ride_id: ride.id });
}

/** Keeps the screen on while the driver is available or on a ride (Screen Wake Lock). */
async function keepAwake() {
  const needed = want === "available" || ride !== null;
  if (!("wakeLock" in navigator)) return;
  try {
    if (needed && (!wake || wake.released) && document.visibilityState === "visible") {
      wake = await navigator.wakeLock.request("screen");
    } else if (!needed && wake) {
      await wake.release();
      wake = null;
    }
  } catch { /* refused (battery saver): the screen may sleep */ }
}

function unlockAudio() {
  if (audio) return;
  try { audio = new AudioContext(); } catch { audio = null; }
}

/** A new offer: vibration and a sound. */
function alertDriver() {
  if ("vibrate" in navigator) navigator.vibrate([300, 150, 300, 150, 300]);
  if (!audio) return;
  const now = audio.currentTime;
  for (const [i, f] of [880, 1175, 880].entries()) {
    const o = audio.createOscillator(), g = audio.createGain();
    o.frequency.value = f;
    g.gain.setValueAtTime(0.0001, now + i * 0.25);
    g.gain.exponentialRampToValueAtTime(0.5, now + i * 0.25 + 0.02);
    g.gain.exponentialRampToValueAtTime(0.0001, now + i * 0.25 + 0.22);
    o.connect(g).connect(audio.destination);
    o.start(now + i * 0.25);
    o.stop(now + i * 0.25 + 0.24);
  }
}

/** Today's trips and earnings, from the pay routes. */
async function loadPay() {
  if (!token) return;
  const midnight = new Date();
  midnight.setHours(0, 0, 0, 0);
  const since = encodeURIComponent(midnight.toISOString().replace(/\.\d+Z$/, "Z"));
  try {
    const [earn, trips] = await Promise.all([
      api(base, "/v1/driver/earnings?since=" + since, { token }),
      api(base, "/v1/driver/trips?since=" + since, { token }),
    ]);
    $("pay-trips").textContent = String(earn.trips + earn.cancellation_fees);
    $("pay-earned").textContent = earn.fares.length ? earn.fares.map(money).join(" + ") : money({ amount: 0, currency: "KRW" });
    const list = $("pay-list");
    list.replaceChildren(...trips.trips.slice(-10).reverse().map((/** @type {any} */ tr) => {
      const row = document.createElement("tr");
      const when = new Date(tr.completed_at).toLocaleTimeString(document.documentElement.lang, { hour: "2-digit", minute: "2-digit" });
      for (const v of [when, tr.kind === "trip" ? distance(tr.distance_m) : "✕", money(tr.fare)]) {
        const td = document.createElement("td");
        td.textContent = v;
        row.append(td);
      }
      return row;
    }));
  } catch { /* shown again at the next refresh */ }
}

/** @param {Point} p */
function where(p) {
  const s = p.lat.toFixed(5) + ", " + p.lng.toFixed(5);
  return pos ? s + " (" + distance(metres(pos, p)) + ")" : s;
}

/** A link that opens the phone's maps app with directions to p. @param {Point} p */
function mapsLink(p) {
  const ll = p.lat + "," + p.lng;
  if (/iPhone|iPad|Macintosh/.test(navigator.userAgent)) return "https://maps.apple.com/?daddr=" + ll;
  return "geo:" + ll + "?q=" + ll;
}

function renderCountdown() {
  if (!offer) return;
  const left = Math.max(0, Math.ceil((Date.parse(offer.expires_at) - Date.now()) / 1000));
  $("offer-count").textContent = left + " s";
  if (left === 0) { $("accept").setAttribute("disabled", ""); }
}

function render() {
  const me = token ? claims(token) : null;
  $("who").textContent = t("title") + (me ? " · " + me.sub : "");
  const up = ws !== null && welcomed;
  $("dot").className = "dot " + (up ? "up" : "down");
  $("conn").textContent = up
    ? t("connected", { region: regionName(base) }) + " · " + t("st_" + state)
    : t("disconnected", { region: regionName(base) });
  $("gps").textContent = gpsDenied ? t("gps_denied") : pos ? t("gps_ok", { acc: distance(pos.accuracy) }) : t("gps_wait");
  const tg = $("toggle");
  const busy = state === "en_route" || state === "on_trip";
  tg.textContent = busy ? t("busy") : state === "offline" ? t("go_available") : t("go_offline");
  tg.className = "big " + (busy ? "" : state === "offline" ? "go" : "stop");
  tg.toggleAttribute("disabled", !up);
  tg.hidden = busy;
  tg.dataset.state = state;

  $("offer").hidden = !offer;
  if (offer) {
    $("offer-fare").textContent = money(offer.fare);
    $("offer-dist").textContent = offer.pickup_distance_m !== undefined ? distance(offer.pickup_distance_m) : "—";
    $("offer-pickup").textContent = where(offer.pickup);
    $("offer-dropoff").textContent = where(offer.dropoff);
    $("accept").toggleAttribute("disabled", Date.parse(offer.expires_at) <= Date.now());
    renderCountdown();
  }

  $("trip").hidden = !ride;
  if (ride) {
    $("trip").dataset.status = ride.status;
    $("trip-title").textContent = t("trip_" + ride.status);
    $("trip-fare").textContent = money(ride.fare);
    $("trip-pickup").textContent = where(ride.pickup);
    $("trip-dropoff").textContent = where(ride.dropoff);
    $("trip-rider").textContent = ride.rider_id;
    const toDropoff = ride.status === "in_progress";
    const nav = /** @type {HTMLAnchorElement} */ ($("navigate"));
    nav.href = mapsLink(toDropoff ? ride.dropoff : ride.pickup);
    nav.textContent = t(toDropoff ? "nav_dropoff" : "nav_pickup");
    const next = { matched: "step_arrived", arrived: "step_start", in_progress: "step_complete" }[ride.status];
    $("step").textContent = next ? t(next) : "";
    $("step").hidden = !next;
    $("step").toggleAttribute("disabled", !up);
  }
}

start();
