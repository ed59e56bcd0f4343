// @ts-check
// k6 v1: the "mixed" scenario of scenarios.json: a fleet streaming locations (some
// declining, ignoring or dropping their socket) and riders at a constant rate.
//   UNDERSTUDY_SECRET=... k6 run -e BASE_URL=http://127.0.0.1:8080 loadtest/mixed.js
import { driver as drive, rider as ride, options as opts, scenario } from './lib.js';

const s = scenario('mixed');
export const options = opts(s, { drivers: true, riders: true });
export function driver() { drive(s); }
export function rider() { ride(s); }
