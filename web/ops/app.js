// @ts-check
// The operator's map: the H3 cells of this region coloured by available drivers and
// searching rides (GET /v1/admin/cells, which gives each cell's outline: no H3 library
// here), the deployment's areas with the region serving each and its lease epoch, the
// regions up or down (GET /v1/regions), and an area's move in one action
// (POST /v1/admin/areas/{name}/move). Live: polled every 2 s.
import {
  $, addText, api, banner, claims, Problem, showSignIn, signOut, t, takeToken, toggleLang, tokenTrouble, translate,
} from "../shared/core.js";
import { PlainMap, tileURL } from "../shared/map.js";

/** @typedef {import("../shared/core.js").Point} Point */
/** @typedef {import("../shared/core.js").RegionsView} RegionsView */
/**
 * @typedef {{region: string, res: number, at: string,
 *   cells: {cell: string, boundary: Point[], drivers_available: number, drivers_busy: number, rides_searching: number}[],
 *   areas: {name: string, home: string, cells: {cell: string, boundary: Point[]}[]}[]}} CellsView
 */

addText({
  en: {
    title: "Operations", regions: "Regions", areas: "Areas", lg_drivers: "available drivers", lg_rides: "searching rides",
    lg_both: "both (numbers: drivers / rides)", up: "up", down: "DOWN", unknown: "unknown", nobody: "nobody", move: "Move",
    home: "home {region}", epoch: "epoch {n}", served: "served by", moved: "Area {area} moved to {region} (epoch {epoch})",
    connected: "This map: region {region}, live", disconnected: "Region not answering: retrying…",
    totals: "{a} available, {b} busy drivers · {s} searching rides (as region {region} sees them)",
    open: "open its map",
  },
  ko: {
    title: "운영", regions: "리전", areas: "지역", lg_drivers: "대기 기사", lg_rides: "배차 대기 호출",
    lg_both: "둘 다 (숫자: 기사 / 호출)", up: "정상", down: "중단", unknown: "알 수 없음", nobody: "없음", move: "이동",
    home: "기본 {region}", epoch: "에포크 {n}", served: "담당", moved: "{area} 지역을 {region} 리전으로 옮김 (에포크 {epoch})",
    connected: "이 지도: {region} 리전, 실시간", disconnected: "리전이 응답하지 않음: 다시 시도 중…",
    totals: "대기 기사 {a}, 운행 기사 {b} · 배차 대기 호출 {s} ({region} 리전 기준)",
    open: "지도 열기",
  },
});

const role = "admin";
const token = takeToken(role);
const main = $("app");
const base = location.origin;
/** @type {PlainMap} */
let map;
let fitted = false;
/** @type {RegionsView | null} */
let regions = null;
/** @type {CellsView | null} */
let cells = null;
let up = true;
/** The region picked for each area's move, kept across the table's refreshes. */
/** @type {Map<string, string>} */
const chosen = new Map();
const palette = ["#0b4f9c", "#b35c00", "#5b2a86", "#00707a", "#7a1f3d", "#3d5a00"];

async function start() {
  $("lang").onclick = () => { toggleLang(); render(); };
  $("signout").onclick = () => { signOut(role); location.replace(location.pathname); };
  translate();
  const trouble = tokenTrouble(token, ["admin"]);
  if (trouble) {
    showSignIn(trouble, main);
    $("signout").hidden = trouble === "none";
    return;
  }
  main.hidden = false;
  for (const el of document.querySelectorAll("[data-c]")) {
    if (el instanceof HTMLElement) el.style.setProperty("--c", el.dataset.c || "");
  }
  map = new PlainMap(/** @type {HTMLCanvasElement} */ ($("map")), { center: { lat: 37.5665, lng: 126.978 }, zoom: 11, tiles: await tileURL() });
  $("zoom-in").onclick = () => map.setZoom(map.zoom + 1);
  $("zoom-out").onclick = () => map.setZoom(map.zoom - 1);
  await poll();
  setInterval(poll, 2000);
}

async function poll() {
  try {
    const [r, c] = await Promise.all([api(base, "/v1/regions"), api(base, "/v1/admin/cells?res=8", { token })]);
    regions = r;
    cells = c;
    up = true;
  } catch (err) {
    if (err instanceof Problem && (err.status === 401 || err.status === 403)) {
      showSignIn(err.status === 401 ? (tokenTrouble(token, ["admin"]) || "refused") : "role", main);
      return;
    }
    up = false;
  }
  render();
}

/** @param {string} name */
function colorOf(name) {
  const names = (regions?.regions || []).map((r) => r.name);
  const i = names.indexOf(name);
  return palette[(i < 0 ? 0 : i) % palette.length];
}

/** @param {string} hex @param {number} alpha */
function rgba(hex, alpha) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${n >> 16}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}

/**
 * @param {string} tag
 * @param {string} text
 * @param {string} [cls]
 */
function el(tag, text, cls) {
  const e = document.createElement(tag);
  e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

/** @param {string} area @param {string} to @param {HTMLButtonElement} button */
async function move(area, to, button) {
  button.disabled = true;
  try {
    const r = await api(base, "/v1/admin/areas/" + encodeURIComponent(area) + "/move", { method: "POST", token, body: { to } });
    banner(t("moved", { area: r.area, region: r.to, epoch: r.epoch }), true);
  } catch (err) {
    banner(err instanceof Error ? err.message : String(err));
  } finally {
    button.disabled = false;
    poll();
  }
}

function render() {
  const me = token ? claims(token) : null;
  $("who").textContent = t("title") + (me ? " · " + me.sub : "");
  $("dot").className = "dot " + (up ? "up" : "down");
  $("conn").textContent = up && cells ? t("connected", { region: cells.region }) : t("disconnected");
  if (!cells || !regions) return;
  const served = new Map(regions.areas.map((a) => [a.name, a]));
  /** @type {import("../shared/map.js").Shape[]} */
  const shapes = [];
  for (const a of cells.areas) {
    const by = served.get(a.name)?.served_by || "";
    for (const c of a.cells) {
      shapes.push({ points: c.boundary, fill: by ? rgba(colorOf(by), 0.1) : "rgba(179,38,30,0.12)",
        stroke: by ? colorOf(by) : "#b3261e", width: 3, label: a.name + " · " + (by || t("nobody")) });
    }
  }
  const areaShapes = shapes.length;
  let avail = 0, busy = 0, searching = 0;
  for (const c of cells.cells) {
    avail += c.drivers_available;
    busy += c.drivers_busy;
    searching += c.rides_searching;
    const color = c.drivers_available && c.rides_searching ? "#7a5cff" : c.rides_searching ? "#b3261e" : c.drivers_available ? "#0a7d2c" : "#6b6b6b";
    const n = c.drivers_available + c.rides_searching;
    shapes.push({ points: c.boundary, fill: rgba(color, Math.min(0.85, 0.3 + 0.1 * n)), stroke: "#0b0b0b", width: 1,
      label: c.drivers_available + " / " + c.rides_searching });
  }
  map.shapes = [...shapes.slice(areaShapes), ...shapes.slice(0, areaShapes)];
  if (!fitted) {
    const pts = shapes.flatMap((s) => s.points);
    if (pts.length) { map.fit(pts, 14); fitted = true; }
  }
  map.redraw();
  $("totals").textContent = t("totals", { a: avail, b: busy, s: searching, region: cells.region });

  $("regions").replaceChildren(...regions.regions.map((r) => {
    const row = document.createElement("tr");
    row.append(el("th", r.name));
    row.append(el("td", r.up === null ? t("unknown") : r.up ? t("up") : t("down"), r.up === false ? "error" : ""));
    const td = document.createElement("td");
    const a = document.createElement("a");
    a.href = r.url.replace(/\/$/, "") + "/ops/#token=" + encodeURIComponent(token || "");
    a.textContent = t("open");
    td.append(a);
    row.append(td);
    row.dataset.region = r.name;
    row.dataset.up = String(r.up);
    return row;
  }));

  $("areas").replaceChildren(...regions.areas.map((a) => {
    const row = document.createElement("tr");
    row.dataset.area = a.name;
    row.dataset.servedBy = a.served_by || "";
    row.append(el("th", a.name));
    const info = el("td", (a.served_by || t("nobody")) + " · " + t("home", { region: a.home }) +
      (a.epoch !== null ? " · " + t("epoch", { n: a.epoch }) : ""), a.served_by ? "" : "error");
    row.append(info);
    const td = document.createElement("td");
    const pick = document.createElement("select");
    for (const r of regions?.regions || []) {
      if (r.name === a.served_by) continue;
      const o = document.createElement("option");
      o.value = r.name;
      o.textContent = r.name + (r.up === false ? " (" + t("down") + ")" : "");
      o.disabled = r.up === false;
      pick.append(o);
    }
    if (chosen.has(a.name)) pick.value = chosen.get(a.name) || "";
    pick.onchange = () => chosen.set(a.name, pick.value);
    const go = document.createElement("button");
    go.type = "button";
    go.textContent = t("move");
    go.className = "primary";
    go.onclick = () => move(a.name, pick.value, go);
    td.append(pick, go);
    row.append(td);
    return row;
  }));
}

start();
