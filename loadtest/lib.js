// @ts-check
// Shared by the k6 scripts of this folder (k6 v1): the scenarios, metrics and
// thresholds of scenarios.json (the file the Go simulator embeds), tokens, and the
// driver, rider and admin behaviours. See README.md for how to run each script.
import http from 'k6/http';
import { WebSocket } from 'k6/websockets';
import { hmac } from 'k6/crypto';
import { b64encode } from 'k6/encoding';
import { Counter, Rate, Trend } from 'k6/metrics';
import { setInterval, setTimeout, clearInterval, clearTimeout } from 'k6/timers';
import exec from 'k6/execution';
import { sleep } from 'k6';

/**
 * @typedef {{name: string, lat: number, lng: number}} Hub
 * @typedef {{radius_m: number, hubs: Hub[]}} City
 * @typedef {{at_s: number, area: string, to: string}} Move
 * @typedef {{about: string, city: string, drivers: number, riders_per_s: number, duration_s: number,
 *   ramp_s: number, location_interval_s: number, drop_per_min: number, decline_share: number,
 *   ignore_share: number, cancel_share: number, pickup_s: number[], trip_s: number[],
 *   drain_s: number, moves: Move[]}} Scenario
 * @typedef {{name: string, kind: string, unit?: string, help: string}} MetricDef
 * @typedef {{metrics: MetricDef[], thresholds: Record<string, string[]>,
 *   cities: Record<string, City>, scenarios: Record<string, Scenario>}} ScenariosFile
 * @typedef {{lat: number, lng: number}} Point
 */

/** @type {ScenariosFile} */
export const file = JSON.parse(open('./scenarios.json'));

/** BASE_URL: the region to load (any region of a deployment). */
export const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const WS_URL = BASE_URL.replace(/^http/, 'ws') + '/v1/driver/ws';
/** RUN_ID prefixes driver and rider ids, so two runs do not share drivers. */
const RUN_ID = __ENV.RUN_ID || 'k6' + Math.floor(Date.now() / 1000).toString(36);

/**
 * The scenario called name, with the environment's overrides: DRIVERS, RATE,
 * DURATION_S, RAMP_S, DRAIN_S, CITY.
 * @param {string} name
 * @returns {Scenario}
 */
export function scenario(name) {
  const s = file.scenarios[name];
  if (!s) {
    throw new Error(`unknown scenario ${name}: have ${Object.keys(file.scenarios).join(', ')}`);
  }
  /** @param {string} key @param {number} dflt */
  const num = (key, dflt) => (__ENV[key] !== undefined && __ENV[key] !== '' ? Number(__ENV[key]) : dflt);
  const out = Object.assign({}, s, {
    drivers: num('DRIVERS', s.drivers),
    riders_per_s: num('RATE', s.riders_per_s),
    duration_s: num('DURATION_S', s.duration_s),
    ramp_s: num('RAMP_S', s.ramp_s),
    drain_s: num('DRAIN_S', s.drain_s),
    city: __ENV.CITY || s.city,
  });
  if (!file.cities[out.city]) {
    throw new Error(`unknown city ${out.city}: have ${Object.keys(file.cities).join(', ')}`);
  }
  return out;
}

// The metrics of scenarios.json, by name.
/** @type {Record<string, Trend>} */
const trends = {};
/** @type {Record<string, Rate>} */
const rates = {};
/** @type {Record<string, Counter>} */
const counters = {};
for (const m of file.metrics) {
  if (m.kind === 'trend') trends[m.name] = new Trend(m.name, m.unit === 'ms');
  else if (m.kind === 'rate') rates[m.name] = new Rate(m.name);
  else counters[m.name] = new Counter(m.name);
}

/**
 * The k6 options of a scenario: one k6 scenario per role it has (drivers: one VU
 * per driver; riders: constant-arrival-rate; moves: one admin VU), and the
 * thresholds of scenarios.json.
 * @param {Scenario} s
 * @param {{drivers?: boolean, riders?: boolean, moves?: boolean}} roles
 */
export function options(s, roles) {
  /** @type {Record<string, any>} */
  const scenarios = {};
  const whole = s.ramp_s + s.duration_s + s.drain_s;
  if (roles.drivers && s.drivers > 0) {
    scenarios.drivers = {
      executor: 'per-vu-iterations', exec: 'driver', vus: s.drivers, iterations: 1,
      maxDuration: `${Math.ceil(whole + 30)}s`,
    };
  }
  if (roles.riders && s.riders_per_s > 0) {
    // k6 counts whole iterations per time unit: rate per minute keeps fractions.
    scenarios.riders = {
      executor: 'constant-arrival-rate', exec: 'rider', startTime: `${s.ramp_s}s`,
      rate: Math.max(1, Math.round(s.riders_per_s * 60)), timeUnit: '1m', duration: `${s.duration_s}s`,
      preAllocatedVUs: Math.ceil(s.riders_per_s * 30), maxVUs: Math.ceil(s.riders_per_s * 120),
      gracefulStop: `${Math.ceil(s.drain_s)}s`,
    };
  }
  if (roles.moves && s.moves.length > 0) {
    scenarios.moves = {
      executor: 'per-vu-iterations', exec: 'mover', vus: 1, iterations: 1,
      maxDuration: `${Math.ceil(whole + 30)}s`,
    };
  }
  return { scenarios, thresholds: file.thresholds, setupTimeout: '60s' };
}

// Tokens: minted here with UNDERSTUDY_SECRET (HS256, as `understudy token`), or
// passed in: DRIVER_TOKENS_FILE and RIDER_TOKENS_FILE (one JWT a line, one per VU)
// and ADMIN_TOKEN.
const SECRET = __ENV.UNDERSTUDY_SECRET || '';
/** @param {string | undefined} path */
function lines(path) {
  return path ? open(path).split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#')) : [];
}
const driverTokens = lines(__ENV.DRIVER_TOKENS_FILE);
const riderTokens = lines(__ENV.RIDER_TOKENS_FILE);

/**
 * An HS256 JWT for sub in role, valid for ttl seconds, signed with UNDERSTUDY_SECRET.
 * @param {string} role
 * @param {string} sub
 * @param {number} ttl
 */
export function mint(role, sub, ttl) {
  if (SECRET.length < 16) {
    throw new Error('set UNDERSTUDY_SECRET (the servers\' development secret) or pass tokens in: see loadtest/README.md');
  }
  const now = Math.floor(Date.now() / 1000);
  const head = b64encode(JSON.stringify({ alg: 'HS256', typ: 'JWT' }), 'rawurl');
  const body = b64encode(JSON.stringify({ sub, role, iat: now, exp: now + ttl }), 'rawurl');
  return `${head}.${body}.${hmac('sha256', SECRET, `${head}.${body}`, 'base64rawurl')}`;
}

/** @param {string[]} list @param {number} i @param {string} role @param {string} sub */
function token(list, i, role, sub) {
  if (list.length > 0) {
    if (i >= list.length) throw new Error(`only ${list.length} ${role} tokens given, VU ${i + 1} needs one`);
    return list[i];
  }
  return mint(role, sub, 6 * 3600);
}

/** @param {number} lo @param {number} hi */
const between = (lo, hi) => lo + Math.random() * (hi - lo);

/** A standard normal sample. */
function normal() {
  const u = 1 - Math.random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * Math.random());
}

/** p moved east dx and north dy metres. @param {Point} p @param {number} dx @param {number} dy @returns {Point} */
function offset(p, dx, dy) {
  return { lat: p.lat + dy / 111320, lng: p.lng + dx / (111320 * Math.cos((p.lat * Math.PI) / 180)) };
}

/** A point around c, σ radius/2, within radius (as the simulator's). @param {Point} c @param {number} radius */
function near(c, radius) {
  for (;;) {
    const dx = (normal() * radius) / 2;
    const dy = (normal() * radius) / 2;
    if (dx * dx + dy * dy <= radius * radius) return offset(c, dx, dy);
  }
}

/** @param {Point} a @param {Point} b @param {number} f @returns {Point} */
function toward(a, b, f) {
  f = Math.max(0, Math.min(1, f));
  return { lat: a.lat + (b.lat - a.lat) * f, lng: a.lng + (b.lng - a.lng) * f };
}

const rank = /** @type {Record<string, number>} */ ({ matched: 1, arrived: 2, in_progress: 3, completed: 4, cancelled: 4, no_driver: 4 });

/**
 * One driver for the whole run (one VU each): connects after its share of the ramp,
 * streams its position, answers offers (accept, decline or ignore, by the
 * scenario's shares), drives each trip through arrived, start and complete, now and
 * then drops its socket and connects again, and leaves after the drain.
 * @param {Scenario} s
 */
export function driver(s) {
  const city = file.cities[s.city];
  const i = exec.vu.idInTest - 1;
  const id = `${RUN_ID}-d${i}`;
  const tok = token(driverTokens, i, 'driver', id);
  const home = near(city.hubs[i % city.hubs.length], city.radius_m);
  const delay = (i / Math.max(1, s.drivers)) * s.ramp_s;
  sleep(delay);
  const endAt = Date.now() + (s.ramp_s - delay + s.duration_s + s.drain_s) * 1000;
  let leg = { from: home, to: home, start: Date.now(), ms: 1 };
  /** @type {{ride: string, rank: number, next: string, pickup: Point, dropoff: Point} | null} */
  let trip = null;
  /** @type {Record<string, number>} */
  const offeredAt = {};
  let welcomes = 0;
  const at = () => toward(leg.from, leg.to, (Date.now() - leg.start) / leg.ms);
  /** @param {Point} to @param {number} ms */
  const go = (to, ms) => {
    const from = at();
    leg = { from, to, start: Date.now(), ms: ms > 0 ? ms : 1000 + (Math.hypot((to.lat - from.lat) * 111320, (to.lng - from.lng) * 88000) / 9) * 1000 };
  };

  const connect = () => {
    const ws = new WebSocket(WS_URL, null, { headers: { Authorization: `Bearer ${tok}` } });
    /** @type {any} */
    let stepTimer = null;
    /** @param {Record<string, any>} f */
    const send = (f) => {
      try {
        ws.send(JSON.stringify(f));
        if (f.type !== 'location') rates.errors.add(false);
      } catch (e) {
        // closed under us: the reconnect resumes
      }
    };
    /** @param {number} ms */
    const schedule = (ms) => {
      if (stepTimer !== null) clearTimeout(stepTimer);
      stepTimer = setTimeout(() => {
        stepTimer = null;
        if (!trip) return;
        send({ type: trip.next, ride_id: trip.ride });
        schedule(5000); // resent until a ride frame answers it
      }, ms);
    };
    /** @param {any} ride */
    const advance = (ride) => {
      if (!trip || trip.ride !== ride.id || (rank[ride.status] || 0) <= trip.rank) return;
      trip.rank = rank[ride.status];
      if (ride.status === 'matched') {
        trip.next = 'arrived';
        const ms = between(s.pickup_s[0], s.pickup_s[1]) * 1000;
        go(trip.pickup, ms);
        schedule(ms);
      } else if (ride.status === 'arrived') {
        trip.next = 'start';
        schedule(1000);
      } else if (ride.status === 'in_progress') {
        trip.next = 'complete';
        const ms = between(s.trip_s[0], s.trip_s[1]) * 1000;
        go(trip.dropoff, ms);
        schedule(ms);
      } else {
        trip = null;
        go(near(home, city.radius_m / 2), 0);
      }
    };
    /** @param {any} ride */
    const begin = (ride) => {
      trip = { ride: ride.id, rank: 0, next: 'arrived', pickup: ride.pickup, dropoff: ride.dropoff };
      advance(ride);
    };
    const ticker = setInterval(() => {
      if (!trip && Date.now() > leg.start + leg.ms) go(near(home, city.radius_m / 2), 0);
      const p = at();
      send({ type: 'location', lat: p.lat, lng: p.lng });
      counters.location_updates.add(1);
    }, s.location_interval_s * 1000);
    const dropper = s.drop_per_min > 0
      ? setInterval(() => {
        if (Math.random() < s.drop_per_min / 6) ws.close(); // checked every 10 s
      }, 10000)
      : null;
    const ender = setTimeout(() => ws.close(), Math.max(0, endAt - Date.now()));

    ws.onmessage = (ev) => {
      const m = JSON.parse(String(ev ? ev.data : '{}'));
      switch (m.type) {
        case 'welcome': {
          if (++welcomes > 1) counters.reconnects.add(1);
          const p = at();
          send({ type: 'location', lat: p.lat, lng: p.lng });
          if (m.ride) {
            if (trip && trip.ride === m.ride.id) {
              if (rank[m.ride.status] === trip.rank) schedule(1000);
              advance(m.ride);
            } else begin(m.ride);
          } else {
            trip = null;
          }
          if (m.state === 'offline') send({ type: 'available' });
          break;
        }
        case 'offer': {
          counters.offers.add(1);
          offeredAt[m.ride_id] = Date.now();
          const x = Math.random();
          if (x < s.decline_share) send({ type: 'decline', offer_id: m.offer_id });
          else if (x >= s.decline_share + s.ignore_share) send({ type: 'accept', offer_id: m.offer_id });
          break;
        }
        case 'assigned': {
          // The offer this driver accepted, against the ride's creation on the
          // server (the simulator measures from the POST to the first offer).
          if (offeredAt[m.ride.id]) {
            trends.request_to_offer.add(offeredAt[m.ride.id] - Date.parse(m.ride.created_at));
            delete offeredAt[m.ride.id];
          }
          if (trip && trip.ride !== m.ride.id) counters.double_assignments.add(1);
          if (trip && trip.ride === m.ride.id) advance(m.ride);
          else begin(m.ride);
          break;
        }
        case 'ride':
          advance(m.ride);
          break;
        case 'ride_cancelled':
          if (trip && trip.ride === m.ride_id) {
            trip = null;
            go(near(home, city.radius_m / 2), 0);
          }
          break;
        case 'state':
          send({ type: 'available' });
          break;
        case 'error':
          // conflict: an answer to an offer that expired or was taken, or a step
          // racing the rider's cancel; expected when the driver is slow.
          if (m.code !== 'conflict') rates.errors.add(true);
          break;
        default:
      }
    };
    ws.onerror = () => rates.errors.add(true);
    ws.onclose = () => {
      clearInterval(ticker);
      if (dropper !== null) clearInterval(dropper);
      clearTimeout(ender);
      if (stepTimer !== null) clearTimeout(stepTimer);
      if (Date.now() < endAt - 1000) setTimeout(connect, 250 + Math.random() * 1000); // resume
    };
    ws.onopen = () => rates.errors.add(false);
  };
  connect();
}

/** @param {string} tok */
const auth = (tok) => ({ Authorization: `Bearer ${tok}`, 'Content-Type': 'application/json' });

/**
 * One ride (one constant-arrival-rate iteration): request it with an
 * Idempotency-Key, follow its status (polling GET every 500 ms) to a final status,
 * and cancel it when the scenario's share says so.
 * @param {Scenario} s
 */
export function rider(s) {
  const city = file.cities[s.city];
  const n = exec.scenario.iterationInTest;
  // As the simulator's RiderPool: a few rides in flight per rider, under the API's
  // per-rider limits.
  const pool = Math.max(32, Math.ceil((s.riders_per_s * (s.pickup_s[1] + s.trip_s[1] + 20)) / 4));
  const i = riderTokens.length > 0 ? n % riderTokens.length : n % pool;
  const tok = token(riderTokens, i, 'rider', `${RUN_ID}-u${i}`);
  const pickup = near(city.hubs[Math.floor(Math.random() * city.hubs.length)], city.radius_m);
  const body = JSON.stringify({ pickup, dropoff: near(pickup, city.radius_m / 2) });
  const key = `${RUN_ID}-${exec.vu.idInTest}-${n}-${Math.random().toString(36).slice(2)}`;
  const sent = Date.now();
  let res = http.post(`${BASE_URL}/v1/rides`, body, { headers: Object.assign({ 'Idempotency-Key': key }, auth(tok)), tags: { name: 'POST /v1/rides' } });
  for (let retry = 0; (res.status === 429 || res.status === 503 || res.status === 0) && retry < 4; retry++) {
    sleep(0.1 * 2 ** retry); // same key and body: the same ride
    res = http.post(`${BASE_URL}/v1/rides`, body, { headers: Object.assign({ 'Idempotency-Key': key }, auth(tok)), tags: { name: 'POST /v1/rides' } });
  }
  let base = BASE_URL;
  if (res.status === 421) { // another region serves the pickup
    const p = /** @type {any} */ (res.json());
    if (p && p.code === 'wrong_region' && p.url) {
      base = String(p.url).replace(/\/+$/, '');
      res = http.post(`${base}/v1/rides`, body, { headers: Object.assign({ 'Idempotency-Key': key }, auth(tok)), tags: { name: 'POST /v1/rides' } });
    }
  }
  rates.errors.add(res.status !== 201);
  if (res.status !== 201) return;
  trends.request_to_created.add(Date.now() - sent);
  counters.rides_requested.add(1);
  const ride = /** @type {any} */ (res.json());
  let cancelAt = Math.random() < s.cancel_share ? sent + Math.random() * (s.pickup_s[1] + 1) * 1000 : Infinity;
  const deadline = Date.now() + (s.drain_s + 120) * 1000;
  let driverId = '';
  let status = ride.status;
  while (!rank[status] || rank[status] < 4) {
    if (Date.now() > deadline) {
      counters.lost_rides.add(1);
      rates.match_rate.add(false);
      return;
    }
    if (Date.now() >= cancelAt) {
      const c = http.post(`${base}/v1/rides/${ride.id}/cancel`, null, { headers: auth(tok), tags: { name: 'POST /v1/rides/{id}/cancel' } });
      rates.errors.add(c.status !== 200 && c.status !== 409); // 409: the trip started first
      cancelAt = Infinity; // once
    }
    sleep(0.5);
    const g = http.get(`${base}/v1/rides/${ride.id}`, { headers: auth(tok), tags: { name: 'GET /v1/rides/{id}' } });
    if (g.status !== 200) {
      rates.errors.add(true);
      continue;
    }
    const v = /** @type {any} */ (g.json());
    status = v.status;
    if (v.driver && v.driver.id) {
      if (!driverId) {
        driverId = v.driver.id;
        trends.request_to_matched.add(Date.now() - sent);
      } else if (driverId !== v.driver.id) counters.double_assignments.add(1);
    }
  }
  if (status === 'completed') counters.rides_completed.add(1);
  else if (status === 'cancelled') counters.rides_cancelled.add(1);
  else counters.rides_no_driver.add(1);
  if (driverId) rates.match_rate.add(true);
  else if (status === 'no_driver') rates.match_rate.add(false);
}

/**
 * The scenario's area moves (admin), each at its time after the ramp.
 * @param {Scenario} s
 */
export function mover(s) {
  const tok = __ENV.ADMIN_TOKEN || mint('admin', `${RUN_ID}-ops`, 6 * 3600);
  const t0 = Date.now();
  for (const m of s.moves) {
    const wait = t0 + (s.ramp_s + m.at_s) * 1000 - Date.now();
    if (wait > 0) sleep(wait / 1000);
    const res = http.post(`${BASE_URL}/v1/admin/areas/${encodeURIComponent(m.area)}/move`, JSON.stringify({ to: m.to }), { headers: auth(tok) });
    rates.errors.add(res.status < 200 || res.status > 299);
    console.log(`moved area ${m.area} to ${m.to}: ${res.status}`);
  }
}
