// @ts-check
// k6 v1: the "drivers" scenario of scenarios.json: a fleet on websockets streaming
// locations and answering offers.
//   UNDERSTUDY_SECRET=... k6 run -e BASE_URL=http://127.0.0.1:8080 loadtest/drivers.js
import { driver as drive, options as opts, scenario } from './lib.js';

const s = scenario('drivers');
export const options = opts(s, { drivers: true });
export function driver() { drive(s); }
