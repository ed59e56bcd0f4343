// @ts-check
// k6 v1: the "riders" scenario of scenarios.json: riders at a constant arrival rate
// over HTTP (Idempotency-Key, follow the status, some cancel) and the fleet that
// serves them.
//   UNDERSTUDY_SECRET=... k6 run -e BASE_URL=http://127.0.0.1:8080 -e RATE=20 loadtest/riders.js
import { driver as drive, rider as ride, options as opts, scenario } from './lib.js';

const s = scenario('riders');
export const options = opts(s, { drivers: true, riders: true });
export function driver() { drive(s); }
export function rider() { ride(s); }
