// Package assign solves one matching batch: which ride goes to which driver, given the
// pickup distance of each candidate pair. It knows nothing of rides or drivers beyond
// their indexes in the batch.
package assign

import (
	"cmp"
	"slices"
)

// Edge says ride Ride may be served by driver Driver at Cost (pickup metres, >= 0).
// Edges with an index out of range, or a Cost that is negative, NaN, infinite or above
// a million kilometres, are ignored; of duplicate (Ride, Driver) edges the cheapest counts.
type Edge struct {
	Ride, Driver int
	Cost         float64
}

// MaxOptimalBatch is the batch size (number of rides) above which Solve falls back to
// Greedy, so that one matching tick stays within a few milliseconds.
//
// Measured with 10 candidates per ride on one core of a 2.6 GHz AMD EPYC
// (docs/perf-assign.md), Optimal takes about 0.2 ms for 200 rides, 2.3 ms for
// 2,000 rides spread over Seoul and about 5 ms for 2,000 rides bunched around four hubs
// with 2,000 drivers in all, where most rides compete for the same drivers; 4,000 such
// rides take 8-11 ms. Its cost grows faster than the number of edges where rides
// contend (each ride that ends up unserved searches its whole contended
// neighbourhood), whereas Greedy stays O(E log E), about 2.3 ms for 20,000 edges.
// The bound assumes short candidate lists: 40 candidates per ride already cost 35-50 ms
// at 1,800 contended rides.
const MaxOptimalBatch = 2000

// maxCost bounds usable edge costs (1e9 m, 25 times round the earth) so the
// solver's sums stay exact enough in float64; no pickup comes near it.
const maxCost = 1e9

// Solve returns, for each ride 0..nRides-1, the index of its driver or -1. Each driver
// serves at most one ride. For nRides <= MaxOptimalBatch the result is optimal: as many
// rides as possible are assigned and, among such assignments, total Cost is lowest;
// above it Solve uses Greedy.
func Solve(nRides, nDrivers int, edges []Edge) []int {
	if nRides > MaxOptimalBatch {
		return Greedy(nRides, nDrivers, edges)
	}
	return Optimal(nRides, nDrivers, edges)
}

// Optimal is Solve's exact solver: maximum number of assigned rides first, then
// minimum total Cost. Its work depends on len(edges), not on nRides*nDrivers, and its
// result depends only on the set of edges, not on their order.
//
// It runs successive shortest augmenting paths (Dijkstra with node potentials, the
// sparse form of the Hungarian / Jonker–Volgenant method). Each ride also has a private
// "unassigned" option costing more than all real edges together, so every ride is
// matched to something and a smaller total means more real assignments first.
func Optimal(nRides, nDrivers int, edges []Edge) []int {
	out := none(nRides)
	g := newGraph(nRides, nDrivers, edges)
	if len(g.edges) == 0 {
		return out
	}
	s := newSolver(g)
	s.solve()
	for r, c := range s.rowCol {
		if int(c) < len(g.drivers) {
			out[g.rides[r]] = g.drivers[c]
		}
	}
	return out
}

// Greedy takes edges cheapest first, skipping a ride or driver already taken: a
// bounded O(E log E) fallback for batches too large for Optimal. Ties are broken by
// ride, then driver index, so the result does not depend on the order of edges.
func Greedy(nRides, nDrivers int, edges []Edge) []int {
	out := none(nRides)
	valid := make([]Edge, 0, len(edges))
	for _, e := range edges {
		if usable(e, nRides, nDrivers) {
			valid = append(valid, e)
		}
	}
	slices.SortFunc(valid, func(a, b Edge) int {
		switch {
		case a.Cost < b.Cost:
			return -1
		case a.Cost > b.Cost:
			return 1
		case a.Ride != b.Ride:
			return a.Ride - b.Ride // both in [0, nRides): no overflow
		default:
			return cmp.Compare(a.Driver, b.Driver)
		}
	})
	taken := make(map[int]struct{}, min(nRides, nDrivers, len(valid)))
	for _, e := range valid {
		if out[e.Ride] >= 0 {
			continue
		}
		if _, ok := taken[e.Driver]; !ok {
			out[e.Ride] = e.Driver
			taken[e.Driver] = struct{}{}
		}
	}
	return out
}

// usable reports whether e can be used: indices in range and a sane cost.
func usable(e Edge, nRides, nDrivers int) bool {
	return e.Ride >= 0 && e.Ride < nRides && e.Driver >= 0 && e.Driver < nDrivers &&
		e.Cost >= 0 && e.Cost <= maxCost // false for NaN
}

// none returns a result with every ride unassigned.
func none(nRides int) []int {
	out := make([]int, max(nRides, 0))
	for i := range out {
		out[i] = -1
	}
	return out
}

// edge is a usable edge between dense row and column numbers.
type edge struct {
	row, col int32
	cost     float64
}

// graph is the input cleaned for the solvers: usable edges only, one per (ride,
// driver) pair, rides and drivers renumbered densely (rows and columns, both in index
// order) so the solver's memory and time depend on the edges, not on nRides*nDrivers.
type graph struct {
	edges   []edge  // sorted by row, then column
	rows    []int32 // row r's edges are edges[rows[r]:rows[r+1]]
	rides   []int   // row -> ride index
	drivers []int   // column -> driver index
}

func newGraph(nRides, nDrivers int, edges []Edge) graph {
	// Bucket the usable edges by ride (a counting sort, O(E + nRides)).
	end := make([]int32, max(nRides, 0)+1)
	n, nRows := 0, 0
	for _, e := range edges {
		if usable(e, nRides, nDrivers) {
			if end[e.Ride+1] == 0 {
				nRows++
			}
			end[e.Ride+1]++
			n++
		}
	}
	for r := 1; r < len(end); r++ {
		end[r] += end[r-1]
	}
	byRide := make([]halfEdge, n)
	for _, e := range edges {
		if usable(e, nRides, nDrivers) {
			byRide[end[e.Ride]] = halfEdge{e.Driver, e.Cost}
			end[e.Ride]++
		}
	}
	// end[r] is now where ride r's edges end, and end[r-1] where they start.

	g := graph{
		edges: make([]edge, 0, n),
		rows:  make([]int32, 0, nRows+1),
		rides: make([]int, 0, nRows),
	}
	drivers := make([]int, 0, n) // driver of each edge in g.edges
	from := int32(0)
	for ride := range max(nRides, 0) {
		to := end[ride]
		if from == to {
			continue
		}
		seg := byRide[from:to]
		from = to
		// Order by driver, cheapest first among duplicates, and keep the first of each.
		if len(seg) <= 16 {
			for i := 1; i < len(seg); i++ {
				for j := i; j > 0 && seg[j].less(seg[j-1]); j-- {
					seg[j], seg[j-1] = seg[j-1], seg[j]
				}
			}
		} else {
			slices.SortFunc(seg, halfEdge.compare)
		}
		row := int32(len(g.rides))
		g.rides = append(g.rides, ride)
		g.rows = append(g.rows, int32(len(g.edges)))
		for i, e := range seg {
			if i == 0 || e.driver != seg[i-1].driver {
				g.edges = append(g.edges, edge{row: row, col: -1, cost: e.cost})
				drivers = append(drivers, e.driver)
			}
		}
	}
	g.rows = append(g.rows, int32(len(g.edges)))
	g.drivers = columnsOf(g.edges, drivers, nDrivers)
	return g
}

// columnsOf numbers the drivers of edges densely in increasing driver order, sets
// each edge's column and returns the column -> driver table. drivers[i] is the driver
// of edges[i].
func columnsOf(edges []edge, drivers []int, nDrivers int) []int {
	cols := make([]int, 0, len(edges))
	next := func(d int) int32 {
		if len(cols) == 0 || cols[len(cols)-1] != d {
			cols = append(cols, d)
		}
		return int32(len(cols) - 1)
	}
	if uint64(nDrivers) <= 1<<32 {
		// Fast path: sort (driver, edge) packed into one machine word.
		keys := make([]uint64, len(edges))
		for i, d := range drivers {
			keys[i] = uint64(d)<<32 | uint64(i)
		}
		slices.Sort(keys)
		for _, k := range keys {
			edges[uint32(k)].col = next(int(k >> 32))
		}
		return cols
	}
	idx := make([]int32, len(edges))
	for i := range idx {
		idx[i] = int32(i)
	}
	slices.SortFunc(idx, func(a, b int32) int {
		if c := cmp.Compare(drivers[a], drivers[b]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	for _, i := range idx {
		edges[i].col = next(drivers[i])
	}
	return cols
}

// halfEdge is an edge whose ride is known from context.
type halfEdge struct {
	driver int
	cost   float64
}

func (a halfEdge) less(b halfEdge) bool {
	return a.driver < b.driver || (a.driver == b.driver && a.cost < b.cost)
}

func (a halfEdge) compare(b halfEdge) int {
	if c := cmp.Compare(a.driver, b.driver); c != 0 {
		return c
	}
	return cmp.Compare(a.cost, b.cost)
}

// solver holds the state of one Optimal run. Columns 0..nReal-1 are
// drivers; column nReal+r is row r's private "unassigned" option.
//
// Invariants between searches: for every arc, cost - u[row] - v[col] >= 0, with
// equality on matched arcs; v == 0 for every free column.
type solver struct {
	arcs   []arc // row r's arcs are arcs[adj[r]:adj[r+1]]: its edges, then its dummy
	adj    []int32
	u      []float64 // row potentials
	rowCol []int32   // row -> matched column, or -1
	cols   []column
	epoch  int32 // number of the current search
	popped []int32
	heap   minHeap
}

// arc is an edge seen from its row.
type arc struct {
	col  int32
	cost float64
}

// column is a column's state, kept together for locality in the inner loop.
type column struct {
	v    float64 // potential
	dist float64 // tentative distance in the current search, if seen == epoch
	seen int32   // last search that reached the column
	done int32   // last search that settled the column
	pred int32   // row from which the current search reached it
	row  int32   // matched row, or -1
}

func newSolver(g graph) *solver {
	nRows := len(g.rides)
	nReal := len(g.drivers)

	// The unassigned option costs more than every real edge together, so one more real
	// assignment always beats any saving in distance.
	total := 0.0
	for _, e := range g.edges {
		total += e.cost
	}
	big := 2*total + 1

	s := &solver{
		arcs:   make([]arc, 0, len(g.edges)+nRows),
		adj:    make([]int32, nRows+1),
		u:      make([]float64, nRows),
		rowCol: make([]int32, nRows),
		cols:   make([]column, nReal+nRows),
	}
	for r := range nRows {
		s.adj[r] = int32(len(s.arcs))
		for _, e := range g.edges[g.rows[r]:g.rows[r+1]] {
			s.arcs = append(s.arcs, arc{e.col, e.cost})
		}
		s.arcs = append(s.arcs, arc{int32(nReal + r), big})
		s.rowCol[r] = -1
	}
	s.adj[nRows] = int32(len(s.arcs))
	for c := range s.cols {
		s.cols[c].row = -1
	}
	return s
}

// solve assigns every row, to a driver or to its unassigned option, at minimum total cost.
func (s *solver) solve() {
	// Warm start: u[r] = the row's cheapest cost keeps every reduced cost >= 0 (v is
	// zero); where that cheapest driver is still free, take it at once.
	for r := range s.rowCol {
		arcs := s.arcs[s.adj[r]:s.adj[r+1]]
		best := arcs[0]
		for _, a := range arcs[1:] {
			if a.cost < best.cost {
				best = a
			}
		}
		s.u[r] = best.cost
		if c := &s.cols[best.col]; c.row < 0 {
			s.rowCol[r], c.row = best.col, int32(r)
		}
	}
	for r := range s.rowCol {
		if s.rowCol[r] < 0 {
			s.augment(int32(r))
		}
	}
}

// augment finds the shortest augmenting path from the free row src (in reduced costs),
// updates the potentials and flips the path. A path always exists: src's own
// unassigned option is free.
func (s *solver) augment(src int32) {
	s.epoch++
	s.heap = s.heap[:0]
	s.popped = s.popped[:0]
	s.relax(src, 0)

	end, d := int32(-1), 0.0
	for len(s.heap) > 0 {
		it := s.heap.pop()
		c := &s.cols[it.col]
		if c.done == s.epoch {
			continue
		}
		c.done = s.epoch
		s.popped = append(s.popped, it.col)
		if c.row < 0 {
			end, d = it.col, it.d
			break
		}
		s.relax(c.row, it.d)
	}

	// Potentials: every column settled before the end moves by its slack to d, and so
	// does the row matched to it; this keeps all reduced costs >= 0 and makes the path tight.
	s.u[src] += d
	for _, i := range s.popped {
		c := &s.cols[i]
		delta := d - c.dist
		c.v -= delta
		if c.row >= 0 {
			s.u[c.row] += delta
		}
	}

	for c := end; ; {
		r := s.cols[c].pred
		prev := s.rowCol[r]
		s.rowCol[r], s.cols[c].row = c, r
		if r == src {
			break
		}
		c = prev
	}
}

// relax offers the columns of row r's arcs paths through r, which is at distance d.
func (s *solver) relax(r int32, d float64) {
	ep := s.epoch
	ur := s.u[r]
	for _, a := range s.arcs[s.adj[r]:s.adj[r+1]] {
		c := &s.cols[a.col]
		if c.done == ep {
			continue
		}
		// Reduced costs are >= 0 in exact arithmetic; clamp rounding noise.
		nd := d + max(a.cost-ur-c.v, 0)
		if c.seen != ep || nd < c.dist {
			c.seen, c.dist, c.pred = ep, nd, r
			s.heap.push(item{d: nd, col: a.col})
		}
	}
}

// item is a tentative distance to a column; stale items are skipped when popped.
type item struct {
	d   float64
	col int32
}

// minHeap is a binary min-heap of item by distance, then column.
type minHeap []item

func (h item) less(o item) bool {
	return h.d < o.d || (h.d == o.d && h.col < o.col)
}

func (h *minHeap) push(it item) {
	*h = append(*h, it)
	a := *h
	i := len(a) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !a[i].less(a[p]) {
			break
		}
		a[i], a[p] = a[p], a[i]
		i = p
	}
}

func (h *minHeap) pop() item {
	a := *h
	top := a[0]
	n := len(a) - 1
	a[0] = a[n]
	a = a[:n]
	for i := 0; ; {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && a[r].less(a[l]) {
			m = r
		}
		if !a[m].less(a[i]) {
			break
		}
		a[i], a[m] = a[m], a[i]
		i = m
	}
	*h = a
	return top
}
