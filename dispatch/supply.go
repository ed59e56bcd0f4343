package dispatch

import (
	"cmp"
	"math"
	"slices"
	"strings"
	"sync"

	h3 "github.com/uber/h3-go/v4"
)

// SupplyIndex holds the available drivers by H3 cell, so that the matcher can find
// the drivers nearest a pickup without looking at the whole fleet. It is safe for
// concurrent use. It has one lock, a sync.RWMutex, and never calls out (to skip, or
// to H3) while holding it.
type SupplyIndex struct {
	res int // H3 resolution of the cells; fixed at construction

	mu      sync.RWMutex
	drivers map[string]*supplyEntry   // every indexed driver
	cells   map[h3.Cell]*supplyBucket // only cells that hold a driver
	free    []*supplyBucket           // emptied buckets kept for reuse
}

// supplyEntry is where one driver sits: its bucket and its slot in it.
type supplyEntry struct {
	b *supplyBucket
	i int // index in b.slots
}

// supplySlot is one driver in a bucket. Location and ID live here, next to the
// other drivers of the cell, so that a query reads a bucket without chasing
// pointers; e is for the writers, to keep the entry's slot index right.
type supplySlot struct {
	loc Point
	id  string
	e   *supplyEntry
}

// supplyBucket holds the drivers in one cell, with the cell's geometry.
type supplyBucket struct {
	cell  h3.Cell
	geom  supplyGeom
	slots []supplySlot
}

// supplyGeom is what the index needs to know about the shape of one cell.
type supplyGeom struct {
	center Point
	// radiusM is at least the distance from center to any point of the cell.
	radiusM float64
	// scaleM is the shortest distance from center to a vertex: the local size of
	// the grid, from which the ring bound (supplyRingBoundM) is scaled.
	scaleM float64
	// normals are the unit normals of the great circles through the cell's edges,
	// each pointing to the side the centre is on, and margin is how far inside all
	// of them (in dot product) a point must be for contains to vouch for it.
	normals [h3.MaxCellBndryVerts]supplyVec
	n       int
	margin  float64
	// disk is the cells within supplyFirstRings of this one, where a query from
	// inside it looks first.
	disk []h3.Cell
}

// supplyVec is a point on the unit sphere.
type supplyVec [3]float64

const (
	// supplyDefaultRes is the resolution NewSupplyIndex uses for an invalid one.
	supplyDefaultRes = 9
	// supplyFirstRings is the grid-disk radius a query looks at first. At
	// resolution 9 and city density it nearly always holds the answer.
	supplyFirstRings = 2
	// supplySafety scales the ring bound down to cover what the planar hexagon
	// model does not: cells that are not regular on the sphere, size drift across
	// the disk, and pentagons. Measured against the exact distances between the
	// actual cell polygons, the model's worst ratio is 0.91 (resolution 0), 0.93
	// (next to a pentagon, or a pentagon origin at k=1) and 0.96 for resolutions 5
	// and finer out to k=40.
	supplySafety = 0.85
	// supplyMaxSpanM caps the radius out to which the ring bound is trusted; beyond
	// it, a query checks every bucket instead, which needs no model at all.
	supplyMaxSpanM = 500e3
	// supplyTooManyRings is a disk radius no query walks: far more cells than any
	// index holds.
	supplyTooManyRings = 1 << 20
	// supplyFreeBuckets is how many emptied buckets are kept for reuse.
	supplyFreeBuckets = 1024
)

// NewSupplyIndex returns an empty index whose cells are at H3 resolution res. A res
// outside 0..15 selects resolution 9, so a bad configuration still yields a working
// index (config validation is where it should be refused).
func NewSupplyIndex(res int) *SupplyIndex {
	if res < 0 || res > 15 {
		res = supplyDefaultRes
	}
	return &SupplyIndex{
		res:     res,
		drivers: make(map[string]*supplyEntry),
		cells:   make(map[h3.Cell]*supplyBucket),
	}
}

// Resolution is the H3 resolution of the index's cells.
func (x *SupplyIndex) Resolution() int { return x.res }

// Upsert adds the driver id at p, or moves it there if it is already indexed.
//
// A point that fails Point.Validate is kept (Len counts it, Location reports it)
// but Nearest never returns it.
func (x *SupplyIndex) Upsert(id string, p Point) { x.place(id, p, false) }

// Move moves the driver id to p if it is indexed and reports whether it was; an
// absent driver is left absent. It is the hot path of location updates: when p is
// still inside the driver's cell (and not within a hair, 1e-4 of the cell's
// inradius, of its edge) it makes no H3 call and allocates nothing.
func (x *SupplyIndex) Move(id string, p Point) bool { return x.place(id, p, true) }

// place implements Upsert and Move; mustExist selects Move.
func (x *SupplyIndex) place(id string, p Point, mustExist bool) bool {
	valid := p.Validate() == nil
	if valid {
		// Fast path: the driver stays well inside its cell.
		u := supplyUnit(p)
		x.mu.Lock()
		e := x.drivers[id]
		if e == nil && mustExist {
			x.mu.Unlock()
			return false
		}
		if e != nil && e.b.geom.contains(u) {
			e.b.slots[e.i].loc = p
			x.mu.Unlock()
			return true
		}
		x.mu.Unlock()
	}

	// Slow path: ask H3 for the cell (and its shape if it is new to the index)
	// without the lock, then place the driver. Invalid points go to cell 0, which
	// no query visits.
	var cell h3.Cell
	if valid {
		cell = h3.LatLngToCell(h3.NewLatLng(p.Lat, p.Lng), x.res)
	}
	var g supplyGeom
	haveGeom := cell == 0
	for {
		x.mu.Lock()
		e := x.drivers[id]
		if e == nil && mustExist {
			x.mu.Unlock()
			return false
		}
		b := x.cells[cell]
		if b == nil {
			if !haveGeom {
				x.mu.Unlock()
				g, haveGeom = supplyGeomOf(cell), true
				continue
			}
			b = x.newBucket(cell, &g)
		}
		switch {
		case e == nil:
			e = new(supplyEntry)
			x.drivers[id] = e
		case e.b == b:
			b.slots[e.i].loc = p
			x.mu.Unlock()
			return true
		default:
			x.detach(e)
		}
		e.b, e.i = b, len(b.slots)
		b.slots = append(b.slots, supplySlot{loc: p, id: id, e: e})
		x.mu.Unlock()
		return true
	}
}

// newBucket adds an empty bucket for cell, reusing a freed one if it can. The
// caller holds x.mu for writing.
func (x *SupplyIndex) newBucket(cell h3.Cell, g *supplyGeom) *supplyBucket {
	var b *supplyBucket
	if n := len(x.free); n > 0 {
		b = x.free[n-1]
		x.free[n-1] = nil
		x.free = x.free[:n-1]
	} else {
		b = new(supplyBucket)
	}
	b.cell, b.geom = cell, *g
	x.cells[cell] = b
	return b
}

// detach takes e out of its bucket by moving the bucket's last slot into its place,
// and drops the bucket if that empties it. The caller holds x.mu for writing.
func (x *SupplyIndex) detach(e *supplyEntry) {
	b := e.b
	last := len(b.slots) - 1
	if e.i != last {
		b.slots[e.i] = b.slots[last]
		b.slots[e.i].e.i = e.i
	}
	b.slots[last] = supplySlot{}
	b.slots = b.slots[:last]
	e.b = nil
	if last == 0 {
		delete(x.cells, b.cell)
		if len(x.free) < supplyFreeBuckets {
			x.free = append(x.free, b)
		}
	}
}

// Remove takes the driver id out of the index and reports whether it was there.
func (x *SupplyIndex) Remove(id string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	e := x.drivers[id]
	if e == nil {
		return false
	}
	x.detach(e)
	delete(x.drivers, id)
	return true
}

// Len is the number of indexed drivers.
func (x *SupplyIndex) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.drivers)
}

// Location is where the index has the driver id, if it has it.
func (x *SupplyIndex) Location(id string) (Point, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	e := x.drivers[id]
	if e == nil {
		return Point{}, false
	}
	return e.b.slots[e.i].loc, true
}

// Candidate is an available driver near a point: what the matcher chooses from.
type Candidate struct {
	DriverID string // the driver's ID, as given to Upsert
	Location Point  // where the index has the driver
	// DistanceM is DistanceM(point, Location): the great-circle distance in metres.
	DistanceM float64
}

// compareCandidates orders candidates nearest first, ties by driver ID.
func compareCandidates(a, b Candidate) int {
	if c := cmp.Compare(a.DistanceM, b.DistanceM); c != 0 {
		return c
	}
	return strings.Compare(a.DriverID, b.DriverID)
}

// Nearest finds the drivers to offer a ride at p to: it appends to dst[:0] up to k
// indexed drivers within maxRadiusM metres of p, nearest first (ties by driver ID),
// leaving out those for which skip(id) is true (skip may be nil). The answer is
// exact: the same drivers in the same order as ranking every indexed driver by
// DistanceM. Nearest returns nothing for k <= 0, a negative or NaN radius, or an
// invalid p.
//
// skip is called without the index's lock held, at most once per driver. When it
// rejects drivers, Nearest searches again past them, so under concurrent updates the
// answer may mix the states before and after an update (it is still sorted); each
// search on its own sees one state.
func (x *SupplyIndex) Nearest(p Point, k int, maxRadiusM float64, skip func(id string) bool, dst []Candidate) []Candidate {
	dst = dst[:0]
	if k <= 0 || !(maxRadiusM >= 0) || p.Validate() != nil {
		return dst
	}
	q := supplyQueries.Get().(*supplyQuery)
	defer q.release()
	q.p = p
	q.origin = h3.LatLngToCell(h3.NewLatLng(p.Lat, p.Lng), x.res)
	for want, round := k, 1; ; want, round = min(2*want, math.MaxInt/4), round+1 {
		x.search(q, want, maxRadiusM)
		for _, c := range q.heap {
			if skip != nil {
				q.seen[c.DriverID] = struct{}{}
				if skip(c.DriverID) {
					continue
				}
			}
			if dst = append(dst, c); len(dst) == k {
				break
			}
		}
		// Done when dst is full, or every driver within maxRadiusM has been seen.
		// Otherwise skip rejected some: search again past them, further at once.
		if len(dst) == k || skip == nil || len(q.heap) < want {
			if round > 1 {
				// An update between rounds may have brought a driver nearer
				// than one found earlier.
				slices.SortFunc(dst, compareCandidates)
			}
			return dst
		}
	}
}

// supplyQuery is the scratch space of one Nearest call, pooled between calls.
type supplyQuery struct {
	p      Point
	origin h3.Cell
	// scaleM and centerM describe the origin cell: its supplyGeom.scaleM and the
	// distance from p to its centre. haveScale says they are set.
	scaleM, centerM float64
	haveScale       bool

	heap  []Candidate         // the best drivers so far: a max-heap, then sorted
	cells []supplyCellBound   // buckets to visit, nearest first
	seen  map[string]struct{} // drivers already passed to skip
}

// supplyCellBound is a bucket with a lower bound on its distance from the query.
type supplyCellBound struct {
	lowM float64
	b    *supplyBucket
}

var supplyQueries = sync.Pool{New: func() any {
	return &supplyQuery{seen: make(map[string]struct{})}
}}

func (q *supplyQuery) release() {
	q.haveScale = false
	clear(q.heap[:cap(q.heap)]) // drop driver IDs and bucket pointers
	q.heap = q.heap[:0]
	clear(q.cells[:cap(q.cells)])
	q.cells = q.cells[:0]
	clear(q.seen)
	supplyQueries.Put(q)
}

// search leaves in q.heap, sorted, the want nearest drivers within maxR of q.p that
// are not in q.seen. It walks grid disks of growing radius around q.origin, calling
// H3 only while it does not hold the lock, and falls back to checking every bucket
// when that is cheaper or the disk would be too wide for the ring bound.
func (x *SupplyIndex) search(q *supplyQuery, want int, maxR float64) {
	rings := supplyFirstRings
	var disk []h3.Cell // nil: the origin bucket's
	for {
		x.mu.RLock()
		next := x.searchLocked(q, disk, rings, want, maxR)
		x.mu.RUnlock()
		switch {
		case next == 0:
			return
		case next < 0: // the origin cell is empty: learn its shape, then retry
			g := supplyGeomOf(q.origin)
			q.scaleM, q.centerM, q.haveScale = g.scaleM, DistanceM(q.p, g.center), true
			disk = g.disk
		default:
			rings = next
			disk = h3.GridDisk(q.origin, rings)
		}
	}
}

// searchLocked does one round of search over disk, the cells within rings of
// q.origin (nil: the disk cached in the origin's bucket). It returns 0 when q.heap
// holds the answer, -1 when it needs the shape of the origin cell because the cell
// has no bucket, or the disk radius to try next. The caller holds x.mu for reading.
func (x *SupplyIndex) searchLocked(q *supplyQuery, disk []h3.Cell, rings, want int, maxR float64) int {
	q.heap = q.heap[:0]
	q.cells = q.cells[:0]
	if len(x.cells) == 0 {
		return 0
	}
	if disk == nil || !q.haveScale {
		b := x.cells[q.origin]
		if b == nil {
			return -1
		}
		if disk == nil {
			disk = b.geom.disk
		}
		if !q.haveScale {
			q.scaleM, q.centerM, q.haveScale = b.geom.scaleM, DistanceM(q.p, b.geom.center), true
		}
	}
	if len(disk) > len(x.cells) || 1.5*float64(rings+1)*q.scaleM > supplyMaxSpanM {
		x.scanLocked(q, want, maxR)
		return 0
	}
	for _, c := range disk {
		if b := x.cells[c]; c != 0 && b != nil {
			q.addCell(b, maxR)
		}
	}
	q.visit(want, maxR)

	// Every cell not in the disk is at least ringBound(rings+1) away. If that is
	// beyond both the radius and the worst driver kept, the answer is complete.
	limit := maxR
	if len(q.heap) == want {
		limit = min(limit, q.heap[0].DistanceM)
	}
	if supplyRingBoundM(rings+1, q.scaleM, q.centerM) > limit {
		slices.SortFunc(q.heap, compareCandidates)
		return 0
	}
	next := supplyRingsFor(limit, q.scaleM, q.centerM)
	if next <= rings || supplyDiskSize(next) > len(x.cells) || 1.5*float64(next)*q.scaleM > supplyMaxSpanM {
		x.scanLocked(q, want, maxR)
		return 0
	}
	return next
}

// scanLocked answers the query from every bucket, with no ring bound. The caller
// holds x.mu for reading.
func (x *SupplyIndex) scanLocked(q *supplyQuery, want int, maxR float64) {
	q.heap = q.heap[:0]
	q.cells = q.cells[:0]
	for c, b := range x.cells {
		if c != 0 {
			q.addCell(b, maxR)
		}
	}
	q.visit(want, maxR)
	slices.SortFunc(q.heap, compareCandidates)
}

// addCell queues b to be visited unless it lies wholly beyond maxR.
func (q *supplyQuery) addCell(b *supplyBucket, maxR float64) {
	low := DistanceM(q.p, b.geom.center) - b.geom.radiusM
	if low <= maxR {
		q.cells = append(q.cells, supplyCellBound{low, b})
	}
}

// visit offers the drivers of the queued buckets, nearest bucket first, to the
// heap of the want best, stopping at the first bucket that cannot hold a better one.
func (q *supplyQuery) visit(want int, maxR float64) {
	slices.SortFunc(q.cells, func(a, b supplyCellBound) int { return cmp.Compare(a.lowM, b.lowM) })
	limit := maxR
	for _, cb := range q.cells {
		if cb.lowM > limit {
			break
		}
		for i := range cb.b.slots {
			s := &cb.b.slots[i]
			d := DistanceM(q.p, s.loc)
			if !(d <= limit) {
				continue
			}
			c := Candidate{DriverID: s.id, Location: s.loc, DistanceM: d}
			if len(q.seen) > 0 {
				if _, ok := q.seen[c.DriverID]; ok {
					continue
				}
			}
			if len(q.heap) < want {
				q.push(c)
			} else if compareCandidates(c, q.heap[0]) < 0 {
				q.heap[0] = c
				q.down(0)
			} else {
				continue
			}
			if len(q.heap) == want {
				limit = min(maxR, q.heap[0].DistanceM)
			}
		}
	}
}

// push adds c to the max-heap q.heap.
func (q *supplyQuery) push(c Candidate) {
	q.heap = append(q.heap, c)
	h := q.heap
	for i := len(h) - 1; i > 0; {
		parent := (i - 1) / 2
		if compareCandidates(h[parent], h[i]) >= 0 {
			break
		}
		h[parent], h[i] = h[i], h[parent]
		i = parent
	}
}

// down restores the max-heap q.heap below i.
func (q *supplyQuery) down(i int) {
	h := q.heap
	for {
		big, l, r := i, 2*i+1, 2*i+2
		if l < len(h) && compareCandidates(h[l], h[big]) > 0 {
			big = l
		}
		if r < len(h) && compareCandidates(h[r], h[big]) > 0 {
			big = r
		}
		if big == i {
			return
		}
		h[i], h[big] = h[big], h[i]
		i = big
	}
}

// supplyRingBoundM is a lower bound on the distance from the query point to any
// point of a cell k or more grid steps from the query's cell, given the cell's
// scaleM and the distance centerM from the point to the cell's centre.
//
// In a plane tiled by regular hexagons of circumradius e, a cell k >= 2 steps away
// is at least (1.5k-2)e from any point of the centre cell and (1.5k-1)e from its
// centre; a neighbour (k = 1) is at least √3/2·e from the centre, its inradius.
// (These are exact minima, computed over the tiling.) A cell further than k steps is
// further still: a great circle from the point to it crosses a cell exactly k steps
// away, as crossing a cell boundary changes the grid distance by at most one.
// H3 cells are not regular on the sphere, so e is the cell's shortest
// centre-to-vertex distance and the result is scaled by supplySafety.
func supplyRingBoundM(k int, scaleM, centerM float64) float64 {
	if k <= 0 {
		return 0
	}
	e := scaleM * supplySafety
	fromCentre := 1.5*float64(k) - 1
	if k == 1 {
		fromCentre = math.Sqrt(3) / 2
	}
	return max(0, (1.5*float64(k)-2)*e, fromCentre*e-centerM)
}

// supplyRingsFor is the smallest disk radius k for which supplyRingBoundM(k+1)
// exceeds limitM, or supplyTooManyRings if that is more.
func supplyRingsFor(limitM, scaleM, centerM float64) int {
	e := scaleM * supplySafety
	// From (1.5(k+1)-2)e > limit: k > (limit/e+2)/1.5 - 1.
	f := (limitM/e+2)/1.5 - 1
	if !(f < supplyTooManyRings) {
		return supplyTooManyRings
	}
	k := max(0, int(f)-1)
	for supplyRingBoundM(k+1, scaleM, centerM) <= limitM {
		k++
	}
	return k
}

// supplyDiskSize is the number of cells within k grid steps of a hexagon.
func supplyDiskSize(k int) int { return 3*k*(k+1) + 1 }

// supplyGeomOf computes the shape of cell.
func supplyGeomOf(cell h3.Cell) supplyGeom {
	ll := h3.CellToLatLng(cell)
	g := supplyGeom{center: Point{Lat: ll.Lat, Lng: ll.Lng}, scaleM: math.Inf(1)}
	c := supplyUnit(g.center)
	verts := h3.CellToBoundary(cell)
	minDot := math.Inf(1)
	for i, v := range verts {
		vp := Point{Lat: v.Lat, Lng: v.Lng}
		d := DistanceM(g.center, vp)
		g.radiusM = max(g.radiusM, d)
		g.scaleM = min(g.scaleM, d)
		w := verts[(i+1)%len(verts)]
		n := supplyUnit(vp).cross(supplyUnit(Point{Lat: w.Lat, Lng: w.Lng}))
		if l := math.Sqrt(n.dot(n)); l > 1e-15 {
			n = supplyVec{n[0] / l, n[1] / l, n[2] / l}
		} else {
			g.n = 0 // a degenerate edge: leave every point to H3
			break
		}
		if n.dot(c) < 0 {
			n = supplyVec{-n[0], -n[1], -n[2]}
		}
		g.normals[g.n] = n
		g.n++
		minDot = min(minDot, n.dot(c))
	}
	g.disk = h3.GridDisk(cell, supplyFirstRings)
	// Points closer to an edge than 1e-4 of the inradius are left to H3.
	g.margin = 1e-4 * minDot
	// Driver positions are inside the cell up to rounding; allow for it.
	g.radiusM *= 1 + 1e-6
	return g
}

// contains reports whether u is inside the cell and not on the edge: inside every
// edge's great circle by the margin. For a cell that is star-shaped about its
// centre, as H3 cells are, that implies inside the cell. It never errs on the
// inside; points it refuses are settled by H3.
func (g *supplyGeom) contains(u supplyVec) bool {
	if g.n == 0 {
		return false
	}
	for i := range g.n {
		if !(u.dot(g.normals[i]) > g.margin) {
			return false
		}
	}
	return true
}

// supplyUnit is p on the unit sphere.
func supplyUnit(p Point) supplyVec {
	const rad = math.Pi / 180
	sinLat, cosLat := math.Sincos(p.Lat * rad)
	sinLng, cosLng := math.Sincos(p.Lng * rad)
	return supplyVec{cosLat * cosLng, cosLat * sinLng, sinLat}
}

func (a supplyVec) dot(b supplyVec) float64 { return a[0]*b[0] + a[1]*b[1] + a[2]*b[2] }

func (a supplyVec) cross(b supplyVec) supplyVec {
	return supplyVec{a[1]*b[2] - a[2]*b[1], a[2]*b[0] - a[0]*b[2], a[0]*b[1] - a[1]*b[0]}
}
