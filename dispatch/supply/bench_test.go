package supply_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	h3 "github.com/uber/h3-go/v4"

	"github.com/understudy/understudy/dispatch/supply"
)

// supplyBenchDrivers is the fleet size of the supply benchmarks: a busy evening in
// Seoul.
const supplyBenchDrivers = 100_000

// newSupplyBenchIndex is an index at resolution 9 holding supplyBenchDrivers
// available drivers spread uniformly over Seoul, with their IDs and positions.
func newSupplyBenchIndex(tb testing.TB) (*supply.Index, []string, []supply.Point) {
	tb.Helper()
	rng := rand.New(rand.NewPCG(2026, 9))
	x := supply.New(9)
	ids := make([]string, supplyBenchDrivers)
	at := make([]supply.Point, supplyBenchDrivers)
	for i := range ids {
		ids[i] = fmt.Sprintf("driver-%06d", i)
		at[i] = supplySeoul.random(rng)
		x.Upsert(ids[i], at[i])
	}
	return x, ids, at
}

// BenchmarkSupplyMove measures a location update of an available driver.
//
//   - jitter: each update moves the driver up to about 5 m (a GPS fix every second
//     or two in traffic), so nearly all updates stay in the driver's cell.
//   - same-cell: updates that never leave the cell (the 0-allocation hot path).
//   - cell-change: every update moves the driver to another cell.
func BenchmarkSupplyMove(b *testing.B) {
	x, ids, at := newSupplyBenchIndex(b)
	const jitterDeg = 0.00005 // about 5.5 m of latitude

	b.Run("jitter", func(b *testing.B) {
		rng := rand.New(rand.NewPCG(1, 1))
		cur := slices.Clone(at)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			j := i % len(ids)
			i++
			p := &cur[j]
			p.Lat += (rng.Float64() - 0.5) * 2 * jitterDeg
			p.Lng += (rng.Float64() - 0.5) * 2 * jitterDeg
			if !x.Move(ids[j], *p) {
				b.Fatal("Move = false")
			}
		}
	})

	b.Run("same-cell", func(b *testing.B) {
		// Two points a metre either side of each driver's cell centre.
		const n = 4096
		var from, to [n]supply.Point
		for j := range n {
			ll := h3.CellToLatLng(h3.LatLngToCell(h3.NewLatLng(at[j].Lat, at[j].Lng), 9))
			from[j] = supply.Point{Lat: ll.Lat - 0.00001, Lng: ll.Lng}
			to[j] = supply.Point{Lat: ll.Lat + 0.00001, Lng: ll.Lng}
			x.Upsert(ids[j], from[j])
		}
		supplyBenchAlternate(b, x, ids, from[:], to[:])
	})

	b.Run("cell-change", func(b *testing.B) {
		// Each driver hops 700 m north and back: always a new cell, which
		// nearly always holds other drivers already.
		const n = 4096
		var from, to [n]supply.Point
		for j := range n {
			from[j] = at[j]
			to[j] = supply.Point{Lat: at[j].Lat + 0.0063, Lng: at[j].Lng}
			x.Upsert(ids[j], from[j])
		}
		supplyBenchAlternate(b, x, ids, from[:], to[:])
	})
}

// supplyBenchAlternate moves driver ids[j] to to[j] and back to from[j], one driver
// per iteration, round after round.
func supplyBenchAlternate(b *testing.B, x *supply.Index, ids []string, from, to []supply.Point) {
	b.ReportAllocs()
	n := len(from)
	i := 0
	for b.Loop() {
		j := i % n
		p := from[j]
		if (i/n)%2 == 0 {
			p = to[j]
		}
		i++
		if !x.Move(ids[j], p) {
			b.Fatal("Move = false")
		}
	}
}

// BenchmarkSupplyNearest10 measures the matcher's query: the 10 nearest available
// drivers within 3 km of a random point in Seoul. Besides the mean it reports the
// latency percentiles of single queries.
func BenchmarkSupplyNearest10(b *testing.B) {
	x, _, _ := newSupplyBenchIndex(b)
	rng := rand.New(rand.NewPCG(3, 3))
	const queries = 1 << 14
	pts := make([]supply.Point, queries)
	for i := range pts {
		pts[i] = supplySeoul.random(rng)
	}
	lat := make([]time.Duration, b.N)
	var dst []supply.Candidate
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		dst = x.Nearest(pts[i%queries], 10, 3000, nil, dst)
		lat[i] = time.Since(start)
		if len(dst) != 10 {
			b.Fatalf("got %d candidates, want 10", len(dst))
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	for _, q := range []struct {
		unit string
		at   float64
	}{{"p50-ns", 0.50}, {"p90-ns", 0.90}, {"p99-ns", 0.99}, {"max-ns", 1}} {
		b.ReportMetric(float64(lat[int(q.at*float64(len(lat)-1))]), q.unit)
	}
}
