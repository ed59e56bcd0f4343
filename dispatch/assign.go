package dispatch

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

// MaxOptimalBatch is the batch size (number of rides) above which Assign falls back to
// AssignGreedy, so one matching tick stays within a few milliseconds whatever the load.
//
// With about ten candidates per ride the optimal solver takes, on one core of a 2.6 GHz
// AMD EPYC (docs/perf-assign.md): about 0.2 ms for 200 rides against 100,000 drivers
// spread over Seoul, about 2 ms for 2,000 rides, and about 1.5 ms for 200 rides fighting
// over 300 drivers in one square kilometre. Its cost grows faster than linearly where
// many rides contend for the same drivers (each ride that ends up unserved searches its
// whole contended neighbourhood), so at 2,000 rides a city-wide surge is still a few
// milliseconds while larger batches are better served by the O(E log E) greedy pass.
const MaxOptimalBatch = 2000

// maxAssignCost bounds usable edge costs (1e9 m, 25 times round the earth) so the
// solver's sums stay exact enough in float64; no pickup comes near it.
const maxAssignCost = 1e9

// Assign returns, for each ride 0..nRides-1, the index of its driver or -1. Each driver
// serves at most one ride. For nRides <= MaxOptimalBatch the result is optimal: as many
// rides as possible are assigned and, among such assignments, total Cost is lowest;
// above it Assign uses AssignGreedy.
func Assign(nRides, nDrivers int, edges []Edge) []int {
	if nRides > MaxOptimalBatch {
		return AssignGreedy(nRides, nDrivers, edges)
	}
	return AssignOptimal(nRides, nDrivers, edges)
}

// AssignOptimal is Assign's exact solver: maximum number of assigned rides first, then
// minimum total Cost. Its work depends on len(edges), not on nRides*nDrivers, and its
// result depends only on the set of edges, not on their order.
//
// It runs successive shortest augmenting paths (Dijkstra with node potentials, the
// sparse form of the Hungarian / Jonker–Volgenant method). Each ride also has a private
// "unassigned" option costing more than all real edges together, so every ride is
// matched to something and a smaller total means more real assignments first.
func AssignOptimal(nRides, nDrivers int, edges []Edge) []int {
	out := assignNone(nRides)
	g := newAssignGraph(nRides, nDrivers, edges)
	if len(g.edges) == 0 {
		return out
	}
	s := newAssignSolver(g)
	s.solve()
	for r, c := range s.rowCol {
		if int(c) < len(g.drivers) {
			out[g.rides[r]] = g.drivers[c]
		}
	}
	return out
}

// AssignGreedy takes edges cheapest first, skipping a ride or driver already taken: a
// bounded O(E log E) fallback for batches too large for AssignOptimal. Ties are broken by
// ride, then driver index, so the result is deterministic.
func AssignGreedy(nRides, nDrivers int, edges []Edge) []int {
	out := assignNone(nRides)
	g := newAssignGraph(nRides, nDrivers, edges)
	slices.SortFunc(g.edges, func(a, b assignEdge) int {
		if c := cmp.Compare(a.cost, b.cost); c != 0 {
			return c
		}
		if c := cmp.Compare(a.row, b.row); c != 0 {
			return c
		}
		return cmp.Compare(a.col, b.col)
	})
	used := make([]bool, len(g.drivers))
	for _, e := range g.edges {
		ride := g.rides[e.row]
		if out[ride] < 0 && !used[e.col] {
			out[ride] = g.drivers[e.col]
			used[e.col] = true
		}
	}
	return out
}

// assignNone returns a result with every ride unassigned.
func assignNone(nRides int) []int {
	out := make([]int, max(nRides, 0))
	for i := range out {
		out[i] = -1
	}
	return out
}

// assignEdge is a usable edge between dense row and column numbers.
type assignEdge struct {
	row, col int32
	cost     float64
}

// assignGraph is the input cleaned for the solvers: usable edges only, one per (ride,
// driver) pair, rides and drivers renumbered densely (rows and columns) in index order
// so memory and time depend on the edges, not on nRides*nDrivers.
type assignGraph struct {
	edges   []assignEdge // sorted by row, then column
	rows    []int32      // row r's edges are edges[rows[r]:rows[r+1]]
	rides   []int        // row -> ride index
	drivers []int        // column -> driver index
}

func newAssignGraph(nRides, nDrivers int, edges []Edge) assignGraph {
	valid := make([]Edge, 0, len(edges))
	for _, e := range edges {
		if e.Ride < 0 || e.Ride >= nRides || e.Driver < 0 || e.Driver >= nDrivers ||
			!(e.Cost >= 0 && e.Cost <= maxAssignCost) { // also rejects NaN
			continue
		}
		valid = append(valid, e)
	}
	slices.SortFunc(valid, func(a, b Edge) int {
		if c := cmp.Compare(a.Ride, b.Ride); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Driver, b.Driver); c != 0 {
			return c
		}
		return cmp.Compare(a.Cost, b.Cost)
	})
	// The cheapest of duplicates sorts first; keep it.
	valid = slices.CompactFunc(valid, func(a, b Edge) bool {
		return a.Ride == b.Ride && a.Driver == b.Driver
	})

	g := assignGraph{edges: make([]assignEdge, len(valid))}
	g.drivers = make([]int, len(valid))
	for i, e := range valid {
		g.drivers[i] = e.Driver
	}
	slices.Sort(g.drivers)
	g.drivers = slices.Compact(g.drivers)
	for i, e := range valid {
		if len(g.rides) == 0 || g.rides[len(g.rides)-1] != e.Ride {
			g.rides = append(g.rides, e.Ride)
			g.rows = append(g.rows, int32(i))
		}
		col, _ := slices.BinarySearch(g.drivers, e.Driver)
		g.edges[i] = assignEdge{row: int32(len(g.rides) - 1), col: int32(col), cost: e.Cost}
	}
	g.rows = append(g.rows, int32(len(valid)))
	return g
}

// assignSolver holds the state of one AssignOptimal run. Columns 0..nReal-1 are
// drivers; column nReal+r is row r's private "unassigned" option.
//
// Invariants between searches: for every edge, cost - u[row] - v[col] >= 0, with
// equality on matched edges; v[col] == 0 for every free column.
type assignSolver struct {
	g      assignGraph
	nReal  int32
	cols   []int32   // adjacency per row, real edges then the dummy: cols[adj[r]:adj[r+1]]
	costs  []float64 // cost per entry of cols
	adj    []int32
	u, v   []float64 // row and column potentials
	rowCol []int32   // row -> matched column, or -1
	colRow []int32   // column -> matched row, or -1

	// Dijkstra scratch, valid where seen/done equal the current epoch.
	dist   []float64
	pred   []int32 // row from which a column was reached
	seen   []int32
	done   []int32
	epoch  int32
	popped []int32
	heap   assignHeap
}

func newAssignSolver(g assignGraph) *assignSolver {
	nRows := len(g.rides)
	nReal := len(g.drivers)
	nCols := nReal + nRows
	nEntries := len(g.edges) + nRows

	// The unassigned option costs more than every real edge together, so one more real
	// assignment always beats any saving in distance.
	total := 0.0
	for _, e := range g.edges {
		total += e.cost
	}
	big := 2*total + 1

	s := &assignSolver{g: g, nReal: int32(nReal)}
	ints := make([]int32, nEntries+(nRows+1)+nRows+4*nCols)
	s.cols, ints = ints[:nEntries], ints[nEntries:]
	s.adj, ints = ints[:nRows+1], ints[nRows+1:]
	s.rowCol, ints = ints[:nRows], ints[nRows:]
	s.colRow, ints = ints[:nCols], ints[nCols:]
	s.pred, ints = ints[:nCols], ints[nCols:]
	s.seen, ints = ints[:nCols], ints[nCols:]
	s.done = ints[:nCols]
	floats := make([]float64, nEntries+nRows+2*nCols)
	s.costs, floats = floats[:nEntries], floats[nEntries:]
	s.u, floats = floats[:nRows], floats[nRows:]
	s.v, floats = floats[:nCols], floats[nCols:]
	s.dist = floats[:nCols]

	k := 0
	for r := range nRows {
		s.adj[r] = int32(k)
		for _, e := range g.edges[g.rows[r]:g.rows[r+1]] {
			s.cols[k], s.costs[k] = e.col, e.cost
			k++
		}
		s.cols[k], s.costs[k] = int32(nReal+r), big
		k++
	}
	s.adj[nRows] = int32(k)
	for i := range s.rowCol {
		s.rowCol[i] = -1
	}
	for i := range s.colRow {
		s.colRow[i] = -1
	}
	return s
}

// solve assigns every row, to a driver or to its unassigned option, at minimum total cost.
func (s *assignSolver) solve() {
	// Warm start: u[r] = the row's cheapest cost keeps every reduced cost >= 0 (v is
	// zero); where that cheapest driver is still free, take it at once.
	for r := range s.rowCol {
		best := s.adj[r]
		for k := s.adj[r] + 1; k < s.adj[r+1]; k++ {
			if s.costs[k] < s.costs[best] {
				best = k
			}
		}
		s.u[r] = s.costs[best]
		if c := s.cols[best]; s.colRow[c] < 0 {
			s.rowCol[r], s.colRow[c] = c, int32(r)
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
func (s *assignSolver) augment(src int32) {
	s.epoch++
	ep := s.epoch
	s.heap = s.heap[:0]
	s.popped = s.popped[:0]
	s.relax(src, 0)

	end, d := int32(-1), 0.0
	for len(s.heap) > 0 {
		it := s.heap.pop()
		if s.done[it.col] == ep {
			continue
		}
		s.done[it.col] = ep
		s.popped = append(s.popped, it.col)
		if s.colRow[it.col] < 0 {
			end, d = it.col, it.d
			break
		}
		s.relax(s.colRow[it.col], it.d)
	}

	// Potentials: every column settled before the end moves by its slack to d, and so
	// does the row matched to it; this keeps all reduced costs >= 0 and makes the path tight.
	s.u[src] += d
	for _, c := range s.popped {
		delta := d - s.dist[c]
		s.v[c] -= delta
		if r := s.colRow[c]; r >= 0 {
			s.u[r] += delta
		}
	}

	for c := end; ; {
		r := s.pred[c]
		prev := s.rowCol[r]
		s.rowCol[r], s.colRow[c] = c, r
		if r == src {
			break
		}
		c = prev
	}
}

// relax offers the columns of row r's edges paths through r, which is at distance d.
func (s *assignSolver) relax(r int32, d float64) {
	ep := s.epoch
	ur := s.u[r]
	for k := s.adj[r]; k < s.adj[r+1]; k++ {
		c := s.cols[k]
		if s.done[c] == ep {
			continue
		}
		// Reduced costs are >= 0 in exact arithmetic; clamp rounding noise.
		nd := d + max(s.costs[k]-ur-s.v[c], 0)
		if s.seen[c] != ep || nd < s.dist[c] {
			s.seen[c] = ep
			s.dist[c] = nd
			s.pred[c] = r
			s.heap.push(assignItem{d: nd, col: c})
		}
	}
}

// assignItem is a tentative distance to a column; stale items are skipped when popped.
type assignItem struct {
	d   float64
	col int32
}

// assignHeap is a binary min-heap of assignItem by distance, then column.
type assignHeap []assignItem

func (h assignItem) less(o assignItem) bool {
	return h.d < o.d || (h.d == o.d && h.col < o.col)
}

func (h *assignHeap) push(it assignItem) {
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

func (h *assignHeap) pop() assignItem {
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
