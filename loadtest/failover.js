// @ts-check
// k6 v1: the "failover" scenario of scenarios.json against `understudy dev-cluster`:
// mixed load while an admin hands an area to another region and back. Kill -9 a
// region during it for an unplanned loss.
//   UNDERSTUDY_SECRET=... k6 run -e BASE_URL=http://127.0.0.1:9101 loadtest/failover.js
import { driver as drive, rider as ride, mover as move, options as opts, scenario } from './lib.js';

const s = scenario('failover');
export const options = opts(s, { drivers: true, riders: true, moves: true });
export function driver() { drive(s); }
export function rider() { ride(s); }
export function mover() { move(s); }
