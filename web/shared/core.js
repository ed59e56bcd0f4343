// @ts-check
// What the three web apps share: the sign-in token, text in two languages, calls to
// the API with problem+json errors, and following the deployment's regions. Plain ES
// module, no build step; only the client contract's APIs.

/** @typedef {{lat: number, lng: number}} Point */
/** @typedef {{amount: number, currency: string}} Money */
/**
 * @typedef {{id: string, rider_id: string, status: string, pickup: Point, dropoff: Point,
 *   driver: {id: string, location: Point | null} | null, fare: Money, created_at: string, updated_at: string}} Ride
 */
/** @typedef {{name: string, url: string, up: boolean | null}} RegionView */
/** @typedef {{name: string, home: string, served_by: string | null, epoch: number | null}} AreaView */
/** @typedef {{regions: RegionView[], areas: AreaView[]}} RegionsView */
/** @typedef {{sub: string, role: string, exp: number}} Claims */

/** A refused API call: the answer's problem+json. */
export class Problem extends Error {
  /**
   * @param {number} status
   * @param {Record<string, any>} body
   */
  constructor(status, body) {
    super(String(body.detail || body.title || "HTTP " + status));
    this.status = status;
    /** @type {string} */
    this.code = String(body.code || "");
    this.body = body;
  }
}

const prefix = "understudy.";

/** localStorage, tolerant of private modes that refuse it. */
export const store = {
  /** @param {string} k */
  get(k) {
    try { return localStorage.getItem(prefix + k); } catch { return null; }
  },
  /** @param {string} k @param {string} v */
  set(k, v) {
    try { localStorage.setItem(prefix + k, v); } catch { /* not kept */ }
  },
  /** @param {string} k */
  del(k) {
    try { localStorage.removeItem(prefix + k); } catch { /* nothing kept */ }
  },
  /** @template T @param {string} k @returns {T | null} */
  getJSON(k) {
    const v = this.get(k);
    if (!v) return null;
    try { return JSON.parse(v); } catch { return null; }
  },
  /** @param {string} k @param {unknown} v */
  setJSON(k, v) { this.set(k, JSON.stringify(v)); },
};

/**
 * The token of role: the one a sign-in link carries in the URL's fragment
 * (#token=...), which is then kept on the device and wiped from the address bar,
 * else the one kept before. The fragment never reaches a server.
 * @param {string} role
 * @returns {string | null}
 */
export function takeToken(role) {
  // A link opened in a tab already showing the app only changes the fragment: start over with it.
  addEventListener("hashchange", () => { if (location.hash.includes("token=")) location.reload(); });
  const params = new URLSearchParams(location.hash.slice(1));
  const fromLink = params.get("token");
  if (fromLink) {
    store.set(role + ".token", fromLink);
    store.del(role + ".base"); // a new link signs in at the region that minted it
    history.replaceState(null, "", location.pathname + location.search);
    return fromLink;
  }
  return store.get(role + ".token");
}

/** @param {string} role */
export function signOut(role) {
  for (const k of ["token", "base", "key", "ride", "want"]) store.del(role + "." + k);
}

/**
 * The token's claims, or null when it is not a JWT.
 * @param {string} tok
 * @returns {Claims | null}
 */
export function claims(tok) {
  const part = tok.split(".")[1];
  if (!part) return null;
  try {
    const json = atob(part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "="));
    const c = JSON.parse(json);
    return typeof c.sub === "string" && typeof c.role === "string" ? { sub: c.sub, role: c.role, exp: Number(c.exp) || 0 } : null;
  } catch {
    return null;
  }
}

/**
 * Why tok cannot sign in as one of roles: "none", "malformed", "expired", "role", or "".
 * @param {string | null} tok
 * @param {string[]} roles
 */
export function tokenTrouble(tok, roles) {
  if (!tok) return "none";
  const c = claims(tok);
  if (!c) return "malformed";
  if (c.exp && c.exp * 1000 <= Date.now()) return "expired";
  if (!roles.includes(c.role)) return "role";
  return "";
}

/**
 * Calls the API at base; answers the JSON body (null for 204), throws a Problem for
 * an error answer and a TypeError when nobody answered.
 * @param {string} base
 * @param {string} path
 * @param {{method?: string, token?: string | null, body?: unknown, headers?: Record<string, string>, signal?: AbortSignal}} [o]
 * @returns {Promise<any>}
 */
export async function api(base, path, o = {}) {
  /** @type {Record<string, string>} */
  const headers = { ...(o.headers || {}) };
  if (o.token) headers["Authorization"] = "Bearer " + o.token;
  /** @type {RequestInit} */
  const init = { method: o.method || "GET", headers, signal: o.signal, cache: "no-store" };
  if (o.body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(o.body);
  }
  const resp = await fetch(base + path, init);
  if (resp.status === 204) return null;
  const text = await resp.text();
  /** @type {any} */
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = { detail: text }; }
  if (!resp.ok) throw new Problem(resp.status, body || {});
  return body;
}

/**
 * The regions this device knows of, for when its region stops answering.
 * @returns {RegionView[]}
 */
export function knownRegions() {
  return store.getJSON("regions") || [];
}

/**
 * Asks base for the deployment's regions, and remembers them.
 * @param {string} base
 * @returns {Promise<RegionsView | null>}
 */
export async function learnRegions(base) {
  try {
    /** @type {RegionsView} */
    const v = await api(base, "/v1/regions");
    if (v && Array.isArray(v.regions) && v.areas.length > 0) {
      store.setJSON("regions", v.regions);
      store.setJSON("areas", v.areas);
    }
    return v;
  } catch {
    return null;
  }
}

/**
 * The region a lost region's clients go to: ask the regions this device knows (but the
 * lost one) for /v1/regions, and answer the URL of the region that serves the lost
 * region's areas now, once one does. null while none does (the takeover takes a few
 * seconds), or when there is no deployment.
 * @param {string} lostBase the URL that stopped answering
 * @returns {Promise<string | null>}
 */
export async function successorOf(lostBase) {
  const regions = knownRegions();
  const lost = regions.find((r) => sameOrigin(r.url, lostBase));
  if (!lost) return null;
  // The lost region's areas: its home areas, and those it served when last asked.
  /** @type {AreaView[]} */
  const before = store.getJSON("areas") || [];
  const its = new Set(before.filter((a) => a.home === lost.name || a.served_by === lost.name).map((a) => a.name));
  for (const r of regions) {
    if (r.name === lost.name) continue;
    const v = await learnRegions(r.url);
    if (!v) continue;
    const area = v.areas.find((a) => (its.has(a.name) || a.home === lost.name) && a.served_by && a.served_by !== lost.name);
    if (!area || !area.served_by) continue;
    const to = v.regions.find((x) => x.name === area.served_by);
    if (to && to.up !== false) return to.url.replace(/\/$/, "");
  }
  return null;
}

/** @param {string} a @param {string} b */
export function sameOrigin(a, b) {
  try { return new URL(a).origin === new URL(b).origin; } catch { return false; }
}

/** The region a name or URL is, for the status line. @param {string} base */
export function regionName(base) {
  const r = knownRegions().find((x) => sameOrigin(x.url, base));
  return r ? r.name : new URL(base).host;
}

/**
 * Money in its currency, in the page's language.
 * @param {Money | null | undefined} m
 */
export function money(m) {
  if (!m) return "—";
  const minor = m.currency === "KRW" || m.currency === "JPY" ? 0 : 2;
  try {
    return new Intl.NumberFormat(lang(), { style: "currency", currency: m.currency }).format(m.amount / 10 ** minor);
  } catch {
    return m.amount + " " + m.currency;
  }
}

/** @param {number} m metres */
export function distance(m) {
  return m >= 1000 ? (m / 1000).toFixed(1) + " km" : Math.round(m) + " m";
}

/** Straight-line distance in metres. @param {Point} a @param {Point} b */
export function metres(a, b) {
  const r = 6371008.8, rad = Math.PI / 180;
  const dLat = (b.lat - a.lat) * rad, dLng = (b.lng - a.lng) * rad;
  const h = Math.sin(dLat / 2) ** 2 + Math.cos(a.lat * rad) * Math.cos(b.lat * rad) * Math.sin(dLng / 2) ** 2;
  return 2 * r * Math.asin(Math.sqrt(h));
}

/** Waits ms, or less if signal aborts. @param {number} ms @param {AbortSignal} [signal] */
export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(t); resolve(undefined); }, { once: true });
  });
}

/** Redial n waits a random time up to min(cap, 500 ms * 2^n): full jitter. @param {number} n */
export function backoff(n, cap = 15000) {
  return Math.random() * Math.min(cap, 500 * 2 ** n);
}

/** A random key, for Idempotency-Key. */
export function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

// Text in two languages. Each page adds its own strings with addText.

/** @type {Record<string, Record<string, string>>} */
const text = {
  en: {
    lang: "한국어", signout: "Sign out", offline_net: "No connection: retrying…", connecting: "Connecting…",
    signin_title: "Sign in with your link", signin_none: "Open the sign-in link your operator sent you (by text message or e-mail). It signs you in on this phone.",
    signin_expired: "Your sign-in link has expired. Ask your operator for a new link, then open it on this phone.",
    signin_refused: "This sign-in link was refused by the server. Ask your operator for a new link.",
    signin_role: "This link is for another app. Open the link your operator sent for this one.",
    signin_malformed: "This sign-in link is damaged. Open it again from the message, or ask for a new one.",
  },
  ko: {
    lang: "English", signout: "로그아웃", offline_net: "연결 끊김: 다시 연결 중…", connecting: "연결 중…",
    signin_title: "링크로 로그인하세요", signin_none: "운영자가 문자나 이메일로 보낸 로그인 링크를 여세요. 이 휴대폰에서 로그인됩니다.",
    signin_expired: "로그인 링크가 만료되었습니다. 운영자에게 새 링크를 요청한 뒤 이 휴대폰에서 여세요.",
    signin_refused: "서버가 이 로그인 링크를 거부했습니다. 운영자에게 새 링크를 요청하세요.",
    signin_role: "다른 앱의 링크입니다. 이 앱용으로 받은 링크를 여세요.",
    signin_malformed: "로그인 링크가 손상되었습니다. 메시지에서 다시 열거나 새 링크를 요청하세요.",
  },
};

/** @param {Record<string, Record<string, string>>} more */
export function addText(more) {
  for (const [l, strings] of Object.entries(more)) Object.assign(text[l] ||= {}, strings);
}

/** The page's language: "ko" or "en". */
export function lang() {
  const chosen = store.get("lang");
  if (chosen === "ko" || chosen === "en") return chosen;
  return (navigator.language || "en").toLowerCase().startsWith("ko") ? "ko" : "en";
}

/**
 * The text of key in the page's language, with {name} replaced from vars.
 * @param {string} key
 * @param {Record<string, string | number>} [vars]
 */
export function t(key, vars = {}) {
  const s = text[lang()][key] ?? text.en[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (_, k) => String(vars[k] ?? ""));
}

/** Fills every [data-t] element with its text, and sets the page's lang. */
export function translate() {
  document.documentElement.lang = lang();
  for (const el of document.querySelectorAll("[data-t]")) {
    el.textContent = t(el.getAttribute("data-t") || "");
  }
}

/** Switches between Korean and English. */
export function toggleLang() {
  store.set("lang", lang() === "ko" ? "en" : "ko");
  translate();
}

/**
 * The element with id, typed.
 * @template {HTMLElement} T
 * @param {string} id
 * @param {new () => T} [type]
 * @returns {T}
 */
export function $(id, type) {
  const el = document.getElementById(id);
  if (!el) throw new Error("no element #" + id);
  if (type && !(el instanceof type)) throw new Error("#" + id + " is not a " + type.name);
  return /** @type {T} */ (el);
}

/**
 * Shows msg in the page's #banner for 8 s (info: as news, not trouble).
 * @param {string} msg
 * @param {boolean} [info]
 */
export function banner(msg, info = false) {
  const b = $("banner");
  b.textContent = msg;
  b.classList.toggle("info", info);
  b.hidden = false;
  clearTimeout(Number(b.dataset.timer || 0));
  b.dataset.timer = String(setTimeout(() => { b.hidden = true; }, 8000));
}

/**
 * Shows the sign-in screen for trouble (see tokenTrouble) and hides main.
 * @param {string} trouble
 * @param {HTMLElement} main
 */
export function showSignIn(trouble, main) {
  main.hidden = true;
  const box = $("signin");
  box.hidden = false;
  $("signin-why").textContent = t("signin_" + trouble);
  box.dataset.trouble = trouble;
}
