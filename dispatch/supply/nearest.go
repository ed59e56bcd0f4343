package supply

import (
	"cmp"
	"math"
	"slices"
	"strings"
	"sync"

	h3 "github.com/uber/h3-go/v4"
)

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
func (x *Index) Nearest(p Point, k int, maxRadiusM float64, skip func(id string) bool, dst []Candidate) []Candidate {
	dst = dst[:0]
	if k <= 0 || !(maxRadiusM >= 0) || !valid(p) {
		return dst
	}
	q := queries.Get().(*query)
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

// query is the scratch space of one Nearest call, pooled between calls.
type query struct {
	p      Point
	origin h3.Cell
	// scaleM and centerM describe the origin cell: its geom.scaleM and the
	// distance from p to its centre. haveScale says they are set.
	scaleM, centerM float64
	haveScale       bool

	heap  []Candidate         // the best drivers so far: a max-heap, then sorted
	cells []cellBound         // buckets to visit, nearest first
	seen  map[string]struct{} // drivers already passed to skip
}

// cellBound is a bucket with a lower bound on its distance from the query.
type cellBound struct {
	lowM float64
	b    *bucket
}

var queries = sync.Pool{New: func() any {
	return &query{seen: make(map[string]struct{})}
}}

func (q *query) release() {
	q.haveScale = false
	clear(q.heap[:cap(q.heap)]) // drop driver IDs and bucket pointers
	q.heap = q.heap[:0]
	clear(q.cells[:cap(q.cells)])
	q.cells = q.cells[:0]
	clear(q.seen)
	queries.Put(q)
}

// search leaves in q.heap, sorted, the want nearest drivers within maxR of q.p that
// are not in q.seen. It walks grid disks of growing radius around q.origin, calling
// H3 only while it does not hold the lock, and falls back to checking every bucket
// when that is cheaper or the disk would be too wide for the ring bound.
func (x *Index) search(q *query, want int, maxR float64) {
	rings := firstRings
	var disk []h3.Cell // nil: the origin bucket's
	for {
		x.mu.RLock()
		next := x.searchLocked(q, disk, rings, want, maxR)
		x.mu.RUnlock()
		switch {
		case next == 0:
			return
		case next < 0: // the origin cell is empty: learn its shape, then retry
			g := geomOf(q.origin)
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
func (x *Index) searchLocked(q *query, disk []h3.Cell, rings, want int, maxR float64) int {
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
	if len(disk) > len(x.cells) || 1.5*float64(rings+1)*q.scaleM > maxSpanM {
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
	if ringBoundM(rings+1, q.scaleM, q.centerM) > limit {
		slices.SortFunc(q.heap, compareCandidates)
		return 0
	}
	next := ringsFor(limit, q.scaleM, q.centerM)
	if next <= rings || diskSize(next) > len(x.cells) || 1.5*float64(next)*q.scaleM > maxSpanM {
		x.scanLocked(q, want, maxR)
		return 0
	}
	return next
}

// scanLocked answers the query from every bucket, with no ring bound. The caller
// holds x.mu for reading.
func (x *Index) scanLocked(q *query, want int, maxR float64) {
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
func (q *query) addCell(b *bucket, maxR float64) {
	low := DistanceM(q.p, b.geom.center) - b.geom.radiusM
	if low <= maxR {
		q.cells = append(q.cells, cellBound{low, b})
	}
}

// visit offers the drivers of the queued buckets, nearest bucket first, to the
// heap of the want best, stopping at the first bucket that cannot hold a better one.
func (q *query) visit(want int, maxR float64) {
	slices.SortFunc(q.cells, func(a, b cellBound) int { return cmp.Compare(a.lowM, b.lowM) })
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
func (q *query) push(c Candidate) {
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
func (q *query) down(i int) {
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
