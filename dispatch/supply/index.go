// Package supply is the supply index: the available drivers of a region by H3 cell,
// so that the matcher finds the drivers nearest a pickup without looking at the whole
// fleet. It knows nothing of rides or offers: drivers are ids at points.
package supply

import (
	"sync"

	h3 "github.com/uber/h3-go/v4"
)

// Point is a position in degrees (WGS 84); dispatch.Point converts to it.
type Point = h3.LatLng

// Index holds the available drivers by H3 cell, so that the matcher can find
// the drivers nearest a pickup without looking at the whole fleet. It is safe for
// concurrent use. It has one lock, a sync.RWMutex, and never calls out (to skip, or
// to H3) while holding it.
type Index struct {
	res int // H3 resolution of the cells; fixed at construction

	mu      sync.RWMutex
	drivers map[string]*entry   // every indexed driver
	cells   map[h3.Cell]*bucket // only cells that hold a driver
	free    []*bucket           // emptied buckets kept for reuse
}

// entry is where one driver sits: its bucket and its slot in it.
type entry struct {
	b *bucket
	i int // index in b.slots
}

// slot is one driver in a bucket. Location and ID live here, next to the
// other drivers of the cell, so that a query reads a bucket without chasing
// pointers; e is for the writers, to keep the entry's slot index right.
type slot struct {
	loc Point
	id  string
	e   *entry
}

// bucket holds the drivers in one cell, with the cell's geometry.
type bucket struct {
	cell  h3.Cell
	geom  geom
	slots []slot
}

const (
	// defaultRes is the resolution New uses for an invalid one.
	defaultRes = 9
	// firstRings is the grid-disk radius a query looks at first. At
	// resolution 9 and city density it nearly always holds the answer.
	firstRings = 2
	// safety scales the ring bound down to cover what the planar hexagon
	// model does not: cells that are not regular on the sphere, size drift across
	// the disk, and pentagons. Measured against the exact distances between the
	// actual cell polygons, the model's worst ratio is 0.91 (resolution 0), 0.93
	// (next to a pentagon, or a pentagon origin at k=1) and 0.96 for resolutions 5
	// and finer out to k=40.
	safety = 0.85
	// maxSpanM caps the radius out to which the ring bound is trusted; beyond
	// it, a query checks every bucket instead, which needs no model at all.
	maxSpanM = 500e3
	// tooManyRings is a disk radius no query walks: far more cells than any
	// index holds.
	tooManyRings = 1 << 20
	// freeBuckets is how many emptied buckets are kept for reuse.
	freeBuckets = 1024
)

// New returns an empty index whose cells are at H3 resolution res. A res
// outside 0..15 selects resolution 9, so a bad configuration still yields a working
// index (config validation is where it should be refused).
func New(res int) *Index {
	if res < 0 || res > 15 {
		res = defaultRes
	}
	return &Index{
		res:     res,
		drivers: make(map[string]*entry),
		cells:   make(map[h3.Cell]*bucket),
	}
}

// Resolution is the H3 resolution of the index's cells.
func (x *Index) Resolution() int { return x.res }

// Upsert adds the driver id at p, or moves it there if it is already indexed.
//
// A point that fails valid is kept (Len counts it, Location reports it)
// but Nearest never returns it.
func (x *Index) Upsert(id string, p Point) { x.place(id, p, false) }

// Move moves the driver id to p if it is indexed and reports whether it was; an
// absent driver is left absent. It is the hot path of location updates: when p is
// still inside the driver's cell (and not within a hair, 1e-4 of the cell's
// inradius, of its edge) it makes no H3 call and allocates nothing.
func (x *Index) Move(id string, p Point) bool { return x.place(id, p, true) }

// place implements Upsert and Move; mustExist selects Move.
func (x *Index) place(id string, p Point, mustExist bool) bool {
	valid := valid(p)
	if valid {
		// Fast path: the driver stays well inside its cell.
		u := unit(p)
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
	var g geom
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
				g, haveGeom = geomOf(cell), true
				continue
			}
			b = x.newBucket(cell, &g)
		}
		switch {
		case e == nil:
			e = new(entry)
			x.drivers[id] = e
		case e.b == b:
			b.slots[e.i].loc = p
			x.mu.Unlock()
			return true
		default:
			x.detach(e)
		}
		e.b, e.i = b, len(b.slots)
		b.slots = append(b.slots, slot{loc: p, id: id, e: e})
		x.mu.Unlock()
		return true
	}
}

// newBucket adds an empty bucket for cell, reusing a freed one if it can. The
// caller holds x.mu for writing.
func (x *Index) newBucket(cell h3.Cell, g *geom) *bucket {
	var b *bucket
	if n := len(x.free); n > 0 {
		b = x.free[n-1]
		x.free[n-1] = nil
		x.free = x.free[:n-1]
	} else {
		b = new(bucket)
	}
	b.cell, b.geom = cell, *g
	x.cells[cell] = b
	return b
}

// detach takes e out of its bucket by moving the bucket's last slot into its place,
// and drops the bucket if that empties it. The caller holds x.mu for writing.
func (x *Index) detach(e *entry) {
	b := e.b
	last := len(b.slots) - 1
	if e.i != last {
		b.slots[e.i] = b.slots[last]
		b.slots[e.i].e.i = e.i
	}
	b.slots[last] = slot{}
	b.slots = b.slots[:last]
	e.b = nil
	if last == 0 {
		delete(x.cells, b.cell)
		if len(x.free) < freeBuckets {
			x.free = append(x.free, b)
		}
	}
}

// Remove takes the driver id out of the index and reports whether it was there.
func (x *Index) Remove(id string) bool {
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
func (x *Index) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.drivers)
}

// Location is where the index has the driver id, if it has it.
func (x *Index) Location(id string) (Point, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	e := x.drivers[id]
	if e == nil {
		return Point{}, false
	}
	return e.b.slots[e.i].loc, true
}
