// @ts-check
// A small map on a canvas: Web Mercator, points and polygons, drag to pan, wheel or
// buttons to zoom, tap to pick a point. Base tiles only when the operator configured a
// URL template (/shared/config.json); without one (no internet) a plain grid.

/** @typedef {import("./core.js").Point} Point */
/** @typedef {{lat: number, lng: number, color: string, label?: string, ring?: boolean}} Marker */
/** @typedef {{points: Point[], fill: string, stroke: string, width?: number, label?: string}} Shape */

const tileSize = 256;

/** @param {Point} p @param {number} z */
function project(p, z) {
  const s = tileSize * 2 ** z;
  const sin = Math.sin((Math.max(-85, Math.min(85, p.lat)) * Math.PI) / 180);
  return { x: ((p.lng + 180) / 360) * s, y: (0.5 - Math.log((1 + sin) / (1 - sin)) / (4 * Math.PI)) * s };
}

/** @param {number} x @param {number} y @param {number} z @returns {Point} */
function unproject(x, y, z) {
  const s = tileSize * 2 ** z;
  const n = Math.PI - (2 * Math.PI * y) / s;
  return { lat: (180 / Math.PI) * Math.atan(Math.sinh(n)), lng: (x / s) * 360 - 180 };
}

/** The base tiles' URL template the operator configured, "" for none. */
export async function tileURL() {
  try {
    const r = await fetch("/shared/config.json", { cache: "no-store" });
    const c = await r.json();
    return typeof c.tiles === "string" ? c.tiles : "";
  } catch {
    return "";
  }
}

export class PlainMap {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {{center: Point, zoom: number, tiles?: string}} o
   */
  constructor(canvas, o) {
    this.canvas = canvas;
    this.center = o.center;
    this.zoom = o.zoom;
    this.tiles = o.tiles || "";
    /** @type {Marker[]} */
    this.markers = [];
    /** @type {Shape[]} */
    this.shapes = [];
    /** @type {((p: Point) => void) | null} */
    this.onTap = null;
    /** @type {Map<string, HTMLImageElement>} */
    this.tileCache = new Map();
    this.frame = 0;
    const ctx = canvas.getContext("2d");
    if (!ctx) throw new Error("no 2d canvas");
    this.ctx = ctx;
    this.listen();
    new ResizeObserver(() => this.redraw()).observe(canvas);
    this.redraw();
  }

  listen() {
    const c = this.canvas;
    /** @type {{x: number, y: number, cx: number, cy: number, moved: boolean} | null} */
    let drag = null;
    c.addEventListener("pointerdown", (e) => {
      const w = project(this.center, this.zoom);
      drag = { x: e.clientX, y: e.clientY, cx: w.x, cy: w.y, moved: false };
      c.setPointerCapture(e.pointerId);
    });
    c.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 8) drag.moved = true;
      if (drag.moved) {
        this.center = unproject(drag.cx - dx, drag.cy - dy, this.zoom);
        this.redraw();
      }
    });
    c.addEventListener("pointerup", (e) => {
      if (drag && !drag.moved && this.onTap) {
        const r = c.getBoundingClientRect();
        this.onTap(this.pointAt(e.clientX - r.left, e.clientY - r.top));
      }
      drag = null;
    });
    c.addEventListener("wheel", (e) => {
      e.preventDefault();
      this.setZoom(this.zoom + (e.deltaY < 0 ? 1 : -1));
    }, { passive: false });
  }

  /** @param {number} z */
  setZoom(z) {
    this.zoom = Math.max(3, Math.min(18, z));
    this.redraw();
  }

  /** The point at canvas pixel (x, y), in CSS pixels. @param {number} x @param {number} y */
  pointAt(x, y) {
    const w = project(this.center, this.zoom);
    return unproject(w.x + x - this.canvas.clientWidth / 2, w.y + y - this.canvas.clientHeight / 2, this.zoom);
  }

  /** Where p is on the canvas, in CSS pixels. @param {Point} p */
  pixelOf(p) {
    const w = project(this.center, this.zoom), q = project(p, this.zoom);
    return { x: q.x - w.x + this.canvas.clientWidth / 2, y: q.y - w.y + this.canvas.clientHeight / 2 };
  }

  /**
   * Centres and zooms so every point shows.
   * @param {Point[]} points
   * @param {number} [maxZoom]
   */
  fit(points, maxZoom = 16) {
    if (points.length === 0) return;
    const w = Math.max(100, this.canvas.clientWidth - 60), h = Math.max(100, this.canvas.clientHeight - 60);
    let z = maxZoom;
    for (; z > 3; z--) {
      const ps = points.map((p) => project(p, z));
      const xs = ps.map((p) => p.x), ys = ps.map((p) => p.y);
      if (Math.max(...xs) - Math.min(...xs) <= w && Math.max(...ys) - Math.min(...ys) <= h) break;
    }
    const ps = points.map((p) => project(p, z));
    const x = (Math.max(...ps.map((p) => p.x)) + Math.min(...ps.map((p) => p.x))) / 2;
    const y = (Math.max(...ps.map((p) => p.y)) + Math.min(...ps.map((p) => p.y))) / 2;
    this.zoom = z;
    this.center = unproject(x, y, z);
    this.redraw();
  }

  redraw() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => { this.frame = 0; this.draw(); });
  }

  draw() {
    const c = this.canvas, ctx = this.ctx, dpr = window.devicePixelRatio || 1;
    const cw = c.clientWidth, ch = c.clientHeight;
    if (c.width !== Math.round(cw * dpr) || c.height !== Math.round(ch * dpr)) {
      c.width = Math.round(cw * dpr);
      c.height = Math.round(ch * dpr);
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#eef1f4";
    ctx.fillRect(0, 0, cw, ch);
    const z = Math.round(this.zoom);
    const w = project(this.center, z);
    const x0 = w.x - cw / 2, y0 = w.y - ch / 2;
    // The grid of tile edges (and the tiles themselves when configured).
    ctx.strokeStyle = "#d5dbe1";
    ctx.lineWidth = 1;
    for (let tx = Math.floor(x0 / tileSize); tx * tileSize < x0 + cw; tx++) {
      for (let ty = Math.floor(y0 / tileSize); ty * tileSize < y0 + ch; ty++) {
        const px = tx * tileSize - x0, py = ty * tileSize - y0;
        if (this.tiles && ty >= 0 && ty < 2 ** z) this.drawTile(z, ((tx % 2 ** z) + 2 ** z) % 2 ** z, ty, px, py);
        ctx.strokeRect(px, py, tileSize, tileSize);
      }
    }
    /** The labels drawn so far: a label that would cover one is left out. */
    /** @type {{x: number, y: number, w: number}[]} */
    const labels = [];
    for (const s of this.shapes) {
      if (s.points.length < 2) continue;
      const qs = s.points.map((p) => this.pixelOf(p));
      const xs = qs.map((q) => q.x), ys = qs.map((q) => q.y);
      const c = this.pixelOf(centroid(s.points));
      if (Math.max(...xs) - Math.min(...xs) < 8) { // too small to see at this zoom: a dot
        ctx.beginPath();
        ctx.arc(c.x, c.y, 5, 0, 2 * Math.PI);
        ctx.fillStyle = s.stroke;
        ctx.fill();
      } else {
        ctx.beginPath();
        qs.forEach((q, i) => { if (i === 0) ctx.moveTo(q.x, q.y); else ctx.lineTo(q.x, q.y); });
        ctx.closePath();
        ctx.fillStyle = s.fill;
        ctx.fill();
        ctx.strokeStyle = s.stroke;
        ctx.lineWidth = s.width || 1;
        ctx.stroke();
      }
      if (s.label) {
        ctx.font = "bold 14px system-ui, sans-serif";
        const w = ctx.measureText(s.label).width + 10;
        const y = Math.max(...xs) - Math.min(...xs) < 8 ? c.y - 16 : c.y;
        if (!labels.some((l) => Math.abs(l.x - c.x) < (l.w + w) / 2 && Math.abs(l.y - y) < 22)) {
          labels.push({ x: c.x, y, w });
          label(ctx, s.label, c.x, y, "#111");
        }
      }
    }
    for (const m of this.markers) {
      const q = this.pixelOf(m);
      ctx.beginPath();
      ctx.arc(q.x, q.y, m.ring ? 11 : 9, 0, 2 * Math.PI);
      ctx.fillStyle = m.color;
      ctx.fill();
      ctx.lineWidth = 3;
      ctx.strokeStyle = "#fff";
      ctx.stroke();
      if (m.label) label(ctx, m.label, q.x, q.y - 22, m.color);
    }
  }

  /** @param {number} z @param {number} x @param {number} y @param {number} px @param {number} py */
  drawTile(z, x, y, px, py) {
    const url = this.tiles.replace("{z}", String(z)).replace("{x}", String(x)).replace("{y}", String(y));
    let img = this.tileCache.get(url);
    if (!img) {
      img = new Image();
      img.crossOrigin = "anonymous";
      img.onload = () => this.redraw();
      img.src = url;
      this.tileCache.set(url, img);
      if (this.tileCache.size > 200) {
        const first = this.tileCache.keys().next().value;
        if (first) this.tileCache.delete(first);
      }
    }
    if (img.complete && img.naturalWidth > 0) this.ctx.drawImage(img, px, py, tileSize, tileSize);
  }
}

/** @param {Point[]} ps */
function centroid(ps) {
  return { lat: ps.reduce((s, p) => s + p.lat, 0) / ps.length, lng: ps.reduce((s, p) => s + p.lng, 0) / ps.length };
}

/**
 * @param {CanvasRenderingContext2D} ctx
 * @param {string} s
 * @param {number} x
 * @param {number} y
 * @param {string} color
 */
function label(ctx, s, x, y, color) {
  ctx.font = "bold 14px system-ui, sans-serif";
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  const w = ctx.measureText(s).width + 10;
  ctx.fillStyle = "rgba(255,255,255,0.92)";
  ctx.fillRect(x - w / 2, y - 10, w, 20);
  ctx.fillStyle = color;
  ctx.fillText(s, x, y);
}
