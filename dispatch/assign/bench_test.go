package assign_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/assign"
)

// Seoul's bounding box, as used by the benchmarks and the quality report.
const (
	assignSeoulMinLat, assignSeoulMaxLat = 37.45, 37.70
	assignSeoulMinLng, assignSeoulMaxLng = 126.80, 127.18
)

// assignGangnam is the centre of the benchmarks' hotspot.
var assignGangnam = dispatch.Point{Lat: 37.4979, Lng: 127.0276}

// BenchmarkAssignBatch200 assigns one tick's batch: 200 requests at random points in
// Seoul, each with its 10 nearest of 100,000 drivers within 3 km.
func BenchmarkAssignBatch200(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	drivers := assignUniformPoints(rng, 100_000)
	rides := assignUniformPoints(rng, 200)
	benchmarkAssign(b, assign.Solve, rides, drivers)
}

// BenchmarkAssignBatch200Hotspot is the contended case: 200 requests and 300 drivers in
// the same square kilometre, so candidate lists overlap heavily; with 120 drivers some
// rides must go unserved, and the solver has to choose which.
func BenchmarkAssignBatch200Hotspot(b *testing.B) {
	for _, nDrivers := range []int{300, 120} {
		b.Run(fmt.Sprintf("drivers=%d", nDrivers), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(2, 2))
			drivers := assignSquarePoints(rng, nDrivers, assignGangnam, 1000)
			rides := assignSquarePoints(rng, 200, assignGangnam, 1000)
			benchmarkAssign(b, assign.Solve, rides, drivers)
		})
	}
}

// BenchmarkAssignScale times both solvers on growing batches, to choose
// MaxOptimalBatch: "city" spreads requests over Seoul against 100,000 drivers; "surge"
// puts 70% of requests around four hubs against only 2,000 drivers, so most rides
// compete for the same few drivers and many stay unserved.
func BenchmarkAssignScale(b *testing.B) {
	rng := rand.New(rand.NewPCG(3, 3))
	city := assignUniformPoints(rng, 100_000)
	surge := assignSeoulDrivers(rng, 2000)
	for _, n := range []int{200, 500, 1000, 2000, 4000} {
		cityRides := assignUniformPoints(rng, n)
		surgeRides := assignSeoulRequests(rng, n)
		for _, s := range []struct {
			name string
			f    func(int, int, []assign.Edge) []int
		}{{"optimal", assign.Optimal}, {"greedy", assign.Greedy}} {
			b.Run(fmt.Sprintf("city/rides=%d/%s", n, s.name), func(b *testing.B) {
				benchmarkAssign(b, s.f, cityRides, city)
			})
			b.Run(fmt.Sprintf("surge/rides=%d/%s", n, s.name), func(b *testing.B) {
				benchmarkAssign(b, s.f, surgeRides, surge)
			})
		}
	}
}

// BenchmarkAssignCandidates shows what the number of candidates per ride costs and
// buys under heavy hub load (1,800 requests, 2,000 drivers, as in
// TestMatchQualityReport): k nearest drivers within 3 km, k=all being every one.
func BenchmarkAssignCandidates(b *testing.B) {
	rng := rand.New(rand.NewPCG(0, 1800))
	drivers := assignSeoulDrivers(rng, 2000)
	rides := assignSeoulRequests(rng, 1800)
	for _, k := range []int{10, 20, 40, len(drivers)} {
		name := fmt.Sprintf("k=%d", k)
		if k == len(drivers) {
			name = "k=all"
		}
		b.Run(name, func(b *testing.B) {
			benchmarkAssignK(b, assign.Optimal, rides, drivers, k)
		})
	}
}

// benchmarkAssign times solve on the 10-nearest-within-3-km edges of rides to drivers
// and reports how many rides it served and their mean pickup distance.
func benchmarkAssign(b *testing.B, solve func(int, int, []assign.Edge) []int, rides, drivers []dispatch.Point) {
	b.Helper()
	benchmarkAssignK(b, solve, rides, drivers, 10)
}

// benchmarkAssignK is benchmarkAssign with k candidates per ride.
func benchmarkAssignK(b *testing.B, solve func(int, int, []assign.Edge) []int, rides, drivers []dispatch.Point, k int) {
	b.Helper()
	grid := newAssignGrid(drivers)
	edges := grid.edges(rides, k, 3000)
	b.ReportAllocs()
	var got []int
	for b.Loop() {
		got = solve(len(rides), len(drivers), edges)
	}
	served, total := 0, 0.0
	for r, d := range got {
		if d >= 0 {
			served++
			total += dispatch.DistanceM(rides[r], drivers[d])
		}
	}
	b.ReportMetric(float64(len(edges))/float64(len(rides)), "edges/ride")
	b.ReportMetric(float64(served), "served")
	b.ReportMetric(total/float64(max(served, 1)), "mean_m")
}

// assignUniformPoints returns n points spread uniformly over Seoul's bounding box.
func assignUniformPoints(rng *rand.Rand, n int) []dispatch.Point {
	ps := make([]dispatch.Point, n)
	for i := range ps {
		ps[i] = dispatch.Point{
			Lat: assignSeoulMinLat + (assignSeoulMaxLat-assignSeoulMinLat)*rng.Float64(),
			Lng: assignSeoulMinLng + (assignSeoulMaxLng-assignSeoulMinLng)*rng.Float64(),
		}
	}
	return ps
}

// assignSquarePoints returns n points spread uniformly over a side×side metre square
// centred on c.
func assignSquarePoints(rng *rand.Rand, n int, c dispatch.Point, side float64) []dispatch.Point {
	ps := make([]dispatch.Point, n)
	for i := range ps {
		ps[i] = assignOffset(c, side*(rng.Float64()-0.5), side*(rng.Float64()-0.5))
	}
	return ps
}

// assignOffset moves p by north and east metres (flat-earth, fine over a few km).
func assignOffset(p dispatch.Point, north, east float64) dispatch.Point {
	return dispatch.Point{
		Lat: p.Lat + north/assignMPerDegLat,
		Lng: p.Lng + east/(assignMPerDegLat*math.Cos(p.Lat*math.Pi/180)),
	}
}

// assignMPerDegLat is the length of one degree of latitude in metres.
const assignMPerDegLat = 111_195.0

// assignGrid buckets points into cells of assignCellDeg degrees to find the points
// near a location without scanning them all. It stands in for the supply index so these
// tests depend on nothing in dispatch but DistanceM.
type assignGrid struct {
	points     []dispatch.Point
	cells      map[[2]int][]int32
	candidates []assignCandidate // scratch for near
}

// assignCandidate is one point near a location.
type assignCandidate struct {
	index int
	distM float64
}

const assignCellDeg = 0.01

func newAssignGrid(points []dispatch.Point) *assignGrid {
	g := &assignGrid{points: points, cells: map[[2]int][]int32{}}
	for i, p := range points {
		k := assignCell(p)
		g.cells[k] = append(g.cells[k], int32(i))
	}
	return g
}

func assignCell(p dispatch.Point) [2]int {
	return [2]int{int(math.Floor(p.Lat / assignCellDeg)), int(math.Floor(p.Lng / assignCellDeg))}
}

// near returns the points within radius metres of p, nearest first (ties by index).
// The result is reused by the next call.
func (g *assignGrid) near(p dispatch.Point, radius float64) []assignCandidate {
	dLat := int(math.Ceil(radius/(assignMPerDegLat*assignCellDeg))) + 1
	dLng := int(math.Ceil(radius/(assignMPerDegLat*math.Cos(p.Lat*math.Pi/180)*assignCellDeg))) + 1
	c := assignCell(p)
	g.candidates = g.candidates[:0]
	for i := c[0] - dLat; i <= c[0]+dLat; i++ {
		for j := c[1] - dLng; j <= c[1]+dLng; j++ {
			for _, k := range g.cells[[2]int{i, j}] {
				if d := dispatch.DistanceM(p, g.points[k]); d <= radius {
					g.candidates = append(g.candidates, assignCandidate{int(k), d})
				}
			}
		}
	}
	slices.SortFunc(g.candidates, func(a, b assignCandidate) int {
		if a.distM != b.distM {
			return int(math.Copysign(1, a.distM-b.distM))
		}
		return a.index - b.index
	})
	return g.candidates
}

// edges links each ride to its k nearest points within radius metres.
func (g *assignGrid) edges(rides []dispatch.Point, k int, radius float64) []assign.Edge {
	var edges []assign.Edge
	for r, p := range rides {
		near := g.near(p, radius)
		for _, c := range near[:min(k, len(near))] {
			edges = append(edges, assign.Edge{Ride: r, Driver: c.index, Cost: c.distM})
		}
	}
	return edges
}
