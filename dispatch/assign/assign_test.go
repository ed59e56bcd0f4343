package assign_test

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/understudy/understudy/dispatch/assign"
)

func TestAssignKnownCases(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	type E = assign.Edge
	tests := []struct {
		name             string
		nRides, nDrivers int
		edges            []E
		want             []int
		wantGreedy       []int // nil: same as want
	}{
		{name: "no rides", nRides: 0, nDrivers: 3, edges: []E{{0, 0, 1}}, want: []int{}},
		{name: "negative rides", nRides: -1, nDrivers: 3, edges: []E{{0, 0, 1}}, want: []int{}},
		{name: "no drivers", nRides: 2, nDrivers: 0, edges: []E{{0, 0, 1}, {1, 0, 2}}, want: []int{-1, -1}},
		{name: "no edges", nRides: 3, nDrivers: 3, want: []int{-1, -1, -1}},
		{
			// Greedy takes the 1 m edge and leaves ride 1 with its 100 m driver.
			name: "greedy trap", nRides: 2, nDrivers: 2,
			edges:      []E{{0, 0, 1}, {0, 1, 2}, {1, 0, 2}, {1, 1, 100}},
			want:       []int{1, 0},
			wantGreedy: []int{0, 1},
		},
		{
			// Serving both rides (11 m) beats serving one at 1 m.
			name: "cardinality before cost", nRides: 2, nDrivers: 2,
			edges:      []E{{0, 0, 1}, {0, 1, 10}, {1, 0, 5}},
			want:       []int{1, 0},
			wantGreedy: []int{0, -1},
		},
		{
			// Only one of two rides can be served; it must be the cheaper one even
			// though ride 0 is solved first.
			name: "cheaper ride wins a contested driver", nRides: 2, nDrivers: 1,
			edges: []E{{0, 0, 10}, {1, 0, 1}},
			want:  []int{-1, 0},
		},
		{
			name: "one driver, many rides", nRides: 5, nDrivers: 1,
			edges: []E{{0, 0, 5}, {1, 0, 4}, {2, 0, 3}, {3, 0, 2}, {4, 0, 1}},
			want:  []int{-1, -1, -1, -1, 0},
		},
		{
			name: "chain of displacements", nRides: 3, nDrivers: 3,
			// Ride 2 wants driver 0, pushing ride 0 to driver 1 and ride 1 to driver 2.
			edges:      []E{{0, 0, 1}, {0, 1, 2}, {1, 1, 1}, {1, 2, 2}, {2, 0, 1}},
			want:       []int{1, 2, 0},
			wantGreedy: []int{0, 1, -1},
		},
		{
			name: "duplicates keep the cheapest", nRides: 2, nDrivers: 2,
			// Usable: ride 0 to driver 0 at 1 m, to driver 1 at 3; ride 1 to 0 at 2, to 1 at 9.
			edges:      []E{{0, 0, 50}, {0, 0, 1}, {0, 1, 3}, {1, 0, 2}, {1, 1, 9}, {1, 1, 40}},
			want:       []int{1, 0},
			wantGreedy: []int{0, 1},
		},
		{
			name: "invalid edges are ignored", nRides: 2, nDrivers: 2,
			edges: []E{
				{-1, 0, 1}, {2, 0, 1}, {0, -1, 1}, {0, 2, 1}, {0, 0, -1}, {0, 0, nan}, {0, 0, inf},
				{0, 0, 2e9}, {1, 1, 7},
			},
			want: []int{-1, 1},
		},
		{
			name: "ride without edges among others", nRides: 3, nDrivers: 2,
			edges:      []E{{0, 1, 4}, {2, 0, 6}, {2, 1, 1}},
			want:       []int{1, -1, 0},
			wantGreedy: []int{-1, -1, 1},
		},
		{
			name: "zero costs", nRides: 2, nDrivers: 2,
			edges: []E{{0, 0, 0}, {1, 0, 0}, {1, 1, 0}},
			want:  []int{0, 1},
		},
		{
			name: "sparse high indices", nRides: 2, nDrivers: 1_000_000,
			edges:      []E{{0, 999_999, 3}, {1, 999_999, 1}, {1, 123_456, 2}},
			want:       []int{999_999, 123_456},
			wantGreedy: []int{-1, 999_999},
		},
		{
			name: "driver indices beyond 32 bits", nRides: 2, nDrivers: math.MaxInt,
			edges:      []E{{0, math.MaxInt - 1, 3}, {1, math.MaxInt - 1, 1}, {1, 7, 2}, {0, math.MaxInt, 1}},
			want:       []int{math.MaxInt - 1, 7},
			wantGreedy: []int{-1, math.MaxInt - 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for name, f := range map[string]func(int, int, []assign.Edge) []int{
				"Solve":   assign.Solve,
				"Optimal": assign.Optimal,
			} {
				got := f(tt.nRides, tt.nDrivers, tt.edges)
				if !slices.Equal(got, tt.want) {
					t.Errorf("%s = %v, want %v", name, got, tt.want)
				}
				assignCheckValid(t, tt.nRides, tt.nDrivers, tt.edges, got)
			}
			wantGreedy := tt.wantGreedy
			if wantGreedy == nil {
				wantGreedy = tt.want
			}
			got := assign.Greedy(tt.nRides, tt.nDrivers, tt.edges)
			if !slices.Equal(got, wantGreedy) {
				t.Errorf("AssignGreedy = %v, want %v", got, wantGreedy)
			}
			assignCheckValid(t, tt.nRides, tt.nDrivers, tt.edges, got)
		})
	}
}

// TestAssignOptimalMatchesBruteForce compares the solver with exhaustive search on
// hundreds of small random instances, with duplicate and invalid edges mixed in.
func TestAssignOptimalMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	instances := 600
	if testing.Short() {
		instances = 200
	}
	for i := range instances {
		nRides, nDrivers := rng.IntN(8), rng.IntN(9)
		edges := assignRandomEdges(rng, nRides, nDrivers, 0.15+0.6*rng.Float64(), i%2 == 0)
		got := assign.Optimal(nRides, nDrivers, edges)
		n, cost := assignCheckValid(t, nRides, nDrivers, edges, got)
		wantN, wantCost := assignBruteForce(nRides, nDrivers, edges)
		if n != wantN || math.Abs(cost-wantCost) > 1e-6 {
			t.Fatalf("instance %d (%d rides, %d drivers, edges %v): got %d rides at %.6f m (%v), brute force %d at %.6f m",
				i, nRides, nDrivers, edges, n, cost, got, wantN, wantCost)
		}
		shuffled := slices.Clone(edges)
		rng.Shuffle(len(shuffled), func(a, b int) { shuffled[a], shuffled[b] = shuffled[b], shuffled[a] })
		if again := assign.Optimal(nRides, nDrivers, shuffled); !slices.Equal(again, got) {
			t.Fatalf("instance %d: result depends on edge order: %v, then %v", i, got, again)
		}
	}
}

// TestAssignOptimalMatchesDenseHungarian checks medium instances, geometric and random,
// against a textbook O(n^3) Hungarian on the dense cost matrix.
func TestAssignOptimalMatchesDenseHungarian(t *testing.T) {
	tests := []struct {
		name             string
		nRides, nDrivers int
		geometric        bool
	}{
		{"geometric scarce supply", 300, 150, true},
		{"geometric balanced", 300, 300, true},
		{"geometric ample supply", 300, 600, true},
		{"random sparse", 300, 300, false},
		{"random sparse scarce", 300, 120, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(i), 99))
			var edges []assign.Edge
			if tt.geometric {
				edges = assignPlanarEdges(rng, tt.nRides, tt.nDrivers, 5000, 10, 1500)
			} else {
				for r := range tt.nRides {
					for range 8 {
						edges = append(edges, assign.Edge{Ride: r, Driver: rng.IntN(tt.nDrivers), Cost: 3000 * rng.Float64()})
					}
				}
			}
			got := assign.Optimal(tt.nRides, tt.nDrivers, edges)
			n, cost := assignCheckValid(t, tt.nRides, tt.nDrivers, edges, got)
			wantN, wantCost := assignDenseHungarian(tt.nRides, tt.nDrivers, edges)
			if n != wantN || math.Abs(cost-wantCost) > 1e-6*max(1, wantCost) {
				t.Fatalf("got %d rides at %.3f m, dense Hungarian %d at %.3f m", n, cost, wantN, wantCost)
			}
			t.Logf("%d edges: %d of %d rides assigned, %.0f m", len(edges), n, tt.nRides, cost)
		})
	}
}

func TestAssignGreedy(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 300 {
		nRides, nDrivers := 1+rng.IntN(40), 1+rng.IntN(40)
		edges := assignRandomEdges(rng, nRides, nDrivers, 0.2*rng.Float64(), true)
		got := assign.Greedy(nRides, nDrivers, edges)
		gotN, gotCost := assignCheckValid(t, nRides, nDrivers, edges, got)

		// Greedy is maximal: no usable edge joins a free ride to a free driver.
		busy := map[int]bool{}
		for _, d := range got {
			busy[d] = true
		}
		for _, e := range assignUsable(nRides, nDrivers, edges) {
			if got[e.Ride] < 0 && !busy[e.Driver] {
				t.Fatalf("instance %d: edge %+v joins a free ride and a free driver: %v", i, e, got)
			}
		}
		// Within factor 2 of the optimum's cardinality (any maximal matching is), never more.
		optN, optCost := assignCheckValid(t, nRides, nDrivers, edges, assign.Optimal(nRides, nDrivers, edges))
		if gotN > optN || 2*gotN < optN || (gotN == optN && gotCost < optCost-1e-6) {
			t.Fatalf("instance %d: greedy %d rides at %.3f m, optimal %d at %.3f m", i, gotN, gotCost, optN, optCost)
		}
	}
}

func TestAssignFallsBackToGreedyAboveMaxOptimalBatch(t *testing.T) {
	// The greedy trap from TestAssignKnownCases, padded with rides that have no edges.
	trap := []assign.Edge{{0, 0, 1}, {0, 1, 2}, {1, 0, 2}, {1, 1, 100}}
	for _, tt := range []struct {
		nRides int
		want   []int // rides 0 and 1
	}{
		{assign.MaxOptimalBatch, []int{1, 0}},
		{assign.MaxOptimalBatch + 1, []int{0, 1}},
	} {
		got := assign.Solve(tt.nRides, 2, trap)
		if len(got) != tt.nRides || !slices.Equal(got[:2], tt.want) {
			t.Errorf("Assign with %d rides: rides 0, 1 got %v, want %v", tt.nRides, got[:2], tt.want)
		}
		if tt.nRides > assign.MaxOptimalBatch && !slices.Equal(got, assign.Greedy(tt.nRides, 2, trap)) {
			t.Errorf("Assign with %d rides differs from AssignGreedy", tt.nRides)
		}
	}
}

// assignRandomEdges returns edges between random ride-driver pairs (each pair with
// probability p). With messy set, it adds duplicates and invalid edges. Costs are often
// small integers so that ties occur.
func assignRandomEdges(rng *rand.Rand, nRides, nDrivers int, p float64, messy bool) []assign.Edge {
	var edges []assign.Edge
	cost := func() float64 {
		if rng.IntN(2) == 0 {
			return float64(rng.IntN(6))
		}
		return 1000 * rng.Float64()
	}
	for r := range nRides {
		for d := range nDrivers {
			if rng.Float64() < p {
				edges = append(edges, assign.Edge{Ride: r, Driver: d, Cost: cost()})
				if messy && rng.IntN(5) == 0 {
					edges = append(edges, assign.Edge{Ride: r, Driver: d, Cost: cost()})
				}
			}
		}
	}
	if messy {
		bad := []assign.Edge{
			{Ride: -1, Driver: 0, Cost: 1}, {Ride: nRides, Driver: 0, Cost: 1},
			{Ride: 0, Driver: -1, Cost: 1}, {Ride: 0, Driver: nDrivers, Cost: 1},
			{Ride: 0, Driver: 0, Cost: -1}, {Ride: 0, Driver: 0, Cost: math.NaN()},
			{Ride: 0, Driver: 0, Cost: math.Inf(1)},
		}
		for range rng.IntN(3) {
			edges = append(edges, bad[rng.IntN(len(bad))])
		}
	}
	rng.Shuffle(len(edges), func(a, b int) { edges[a], edges[b] = edges[b], edges[a] })
	return edges
}

// assignPlanarEdges scatters rides and drivers over a side×side metre square and links
// each ride to its k nearest drivers within radius (planar distance).
func assignPlanarEdges(rng *rand.Rand, nRides, nDrivers int, side float64, k int, radius float64) []assign.Edge {
	type xy struct{ x, y float64 }
	drivers := make([]xy, nDrivers)
	for i := range drivers {
		drivers[i] = xy{side * rng.Float64(), side * rng.Float64()}
	}
	var edges []assign.Edge
	for r := range nRides {
		p := xy{side * rng.Float64(), side * rng.Float64()}
		var near []assign.Edge
		for d, q := range drivers {
			if dist := math.Hypot(p.x-q.x, p.y-q.y); dist <= radius {
				near = append(near, assign.Edge{Ride: r, Driver: d, Cost: dist})
			}
		}
		slices.SortFunc(near, func(a, b assign.Edge) int { return int(math.Copysign(1, a.Cost-b.Cost)) })
		edges = append(edges, near[:min(k, len(near))]...)
	}
	return edges
}

// assignUsable returns the edges the solvers should use: valid, and the cheapest of
// each (ride, driver) pair.
func assignUsable(nRides, nDrivers int, edges []assign.Edge) map[[2]int]assign.Edge {
	m := map[[2]int]assign.Edge{}
	for _, e := range edges {
		if e.Ride < 0 || e.Ride >= nRides || e.Driver < 0 || e.Driver >= nDrivers ||
			!(e.Cost >= 0) || math.IsInf(e.Cost, 0) || e.Cost > 1e9 {
			continue
		}
		k := [2]int{e.Ride, e.Driver}
		if old, ok := m[k]; !ok || e.Cost < old.Cost {
			m[k] = e
		}
	}
	return m
}

// assignCheckValid fails the test unless got is a valid assignment using only usable
// edges, and returns the number of assigned rides and their total cost.
func assignCheckValid(tb testing.TB, nRides, nDrivers int, edges []assign.Edge, got []int) (int, float64) {
	tb.Helper()
	if len(got) != max(nRides, 0) {
		tb.Fatalf("got %d results for %d rides", len(got), nRides)
	}
	usable := assignUsable(nRides, nDrivers, edges)
	taken := map[int]int{}
	n, cost := 0, 0.0
	for r, d := range got {
		if d < 0 {
			if d != -1 {
				tb.Fatalf("ride %d: driver %d", r, d)
			}
			continue
		}
		e, ok := usable[[2]int{r, d}]
		if !ok {
			tb.Fatalf("ride %d got driver %d without a usable edge", r, d)
		}
		if other, dup := taken[d]; dup {
			tb.Fatalf("driver %d assigned to rides %d and %d", d, other, r)
		}
		taken[d] = r
		n++
		cost += e.Cost
	}
	return n, cost
}

// assignBruteForce tries every assignment and returns the most rides served and, for
// that number, the least total cost.
func assignBruteForce(nRides, nDrivers int, edges []assign.Edge) (int, float64) {
	byRide := make([][]assign.Edge, max(nRides, 0))
	for _, e := range assignUsable(nRides, nDrivers, edges) {
		byRide[e.Ride] = append(byRide[e.Ride], e)
	}
	used := make([]bool, nDrivers)
	bestN, bestCost := 0, 0.0
	var walk func(r, n int, cost float64)
	walk = func(r, n int, cost float64) {
		if r == len(byRide) {
			if n > bestN || (n == bestN && cost < bestCost) {
				bestN, bestCost = n, cost
			}
			return
		}
		walk(r+1, n, cost)
		for _, e := range byRide[r] {
			if !used[e.Driver] {
				used[e.Driver] = true
				walk(r+1, n+1, cost+e.Cost)
				used[e.Driver] = false
			}
		}
	}
	walk(0, 0, 0)
	return bestN, bestCost
}

// assignDenseHungarian solves the same problem with the O(n^2 m) Hungarian method on a
// dense matrix: nRides rows; nDrivers driver columns (missing edges cost a prohibitive
// price) plus nRides "unassigned" columns at a price above all real costs together.
func assignDenseHungarian(nRides, nDrivers int, edges []assign.Edge) (int, float64) {
	usable := assignUsable(nRides, nDrivers, edges)
	total := 0.0
	for _, e := range usable {
		total += e.Cost
	}
	unassigned := total + 1
	forbidden := 1000 * unassigned
	n, m := nRides, nDrivers+nRides
	a := make([]float64, n*m)
	for i := range a {
		if i%m < nDrivers {
			a[i] = forbidden
		} else {
			a[i] = unassigned
		}
	}
	for _, e := range usable {
		a[e.Ride*m+e.Driver] = e.Cost
	}

	// e-maxx formulation, 1-based: p[j] is the row matched to column j.
	u, v := make([]float64, n+1), make([]float64, m+1)
	p, way := make([]int, m+1), make([]int, m+1)
	minv, used := make([]float64, m+1), make([]bool, m+1)
	for i := 1; i <= n; i++ {
		p[0] = i
		j0 := 0
		for j := range minv {
			minv[j], used[j] = math.Inf(1), false
		}
		for {
			used[j0] = true
			i0, delta, j1 := p[j0], math.Inf(1), 0
			for j := 1; j <= m; j++ {
				if used[j] {
					continue
				}
				if cur := a[(i0-1)*m+j-1] - u[i0] - v[j]; cur < minv[j] {
					minv[j], way[j] = cur, j0
				}
				if minv[j] < delta {
					delta, j1 = minv[j], j
				}
			}
			for j := 0; j <= m; j++ {
				if used[j] {
					u[p[j]] += delta
					v[j] -= delta
				} else {
					minv[j] -= delta
				}
			}
			j0 = j1
			if p[j0] == 0 {
				break
			}
		}
		for j0 != 0 {
			j1 := way[j0]
			p[j0] = p[j1]
			j0 = j1
		}
	}
	count, cost := 0, 0.0
	for j := 1; j <= nDrivers; j++ {
		if p[j] != 0 && a[(p[j]-1)*m+j-1] < forbidden {
			count++
			cost += a[(p[j]-1)*m+j-1]
		}
	}
	return count, cost
}
