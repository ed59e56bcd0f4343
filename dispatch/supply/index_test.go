package supply_test

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	h3 "github.com/uber/h3-go/v4"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/supply"
)

// supplySeoul is the box the Seoul fleets and queries are drawn from.
var supplySeoul = supplyBox{37.45, 37.70, 126.80, 127.18}

// supplyBox is a latitude/longitude rectangle; minLng > maxLng wraps across the
// antimeridian.
type supplyBox struct{ minLat, maxLat, minLng, maxLng float64 }

func (b supplyBox) random(rng *rand.Rand) supply.Point {
	lat := b.minLat + rng.Float64()*(b.maxLat-b.minLat)
	width := b.maxLng - b.minLng
	if width < 0 {
		width += 360
	}
	lng := b.minLng + rng.Float64()*width
	if lng > 180 {
		lng -= 360
	}
	return supply.Point{Lat: lat, Lng: lng}
}

// supplyFleet is an index together with the plain map it must agree with.
type supplyFleet struct {
	idx *supply.Index
	at  map[string]supply.Point
}

func newSupplyFleet(res int) *supplyFleet {
	return &supplyFleet{idx: supply.New(res), at: make(map[string]supply.Point)}
}

func (f *supplyFleet) upsert(tb testing.TB, id string, p supply.Point) {
	tb.Helper()
	if err := dispatch.Point(p).Validate(); err != nil {
		tb.Fatalf("test fleet: %v", err)
	}
	f.idx.Upsert(id, p)
	f.at[id] = p
}

// ranked is every driver ranked by distance from p, ties by ID.
func (f *supplyFleet) ranked(p supply.Point) []supply.Candidate {
	all := make([]supply.Candidate, 0, len(f.at))
	for id, at := range f.at {
		all = append(all, supply.Candidate{DriverID: id, Location: at, DistanceM: supply.DistanceM(p, at)})
	}
	slices.SortFunc(all, func(a, b supply.Candidate) int {
		if c := cmp.Compare(a.DistanceM, b.DistanceM); c != 0 {
			return c
		}
		return strings.Compare(a.DriverID, b.DriverID)
	})
	return all
}

// supplyPick is the brute-force answer from a ranking.
func supplyPick(ranked []supply.Candidate, k int, maxR float64, skip func(string) bool) []supply.Candidate {
	var out []supply.Candidate
	for _, c := range ranked {
		if len(out) >= k || !(c.DistanceM <= maxR) {
			break
		}
		if skip == nil || !skip(c.DriverID) {
			out = append(out, c)
		}
	}
	return out
}

// brute is the reference answer: every driver ranked by distance.
func (f *supplyFleet) brute(p supply.Point, k int, maxR float64, skip func(string) bool) []supply.Candidate {
	return supplyPick(f.ranked(p), k, maxR, skip)
}

// check asserts that Nearest and brute force agree exactly.
func (f *supplyFleet) check(tb testing.TB, p supply.Point, k int, maxR float64, skip func(string) bool) {
	tb.Helper()
	f.checkRanked(tb, f.ranked(p), p, k, maxR, skip)
}

func (f *supplyFleet) checkRanked(tb testing.TB, ranked []supply.Candidate, p supply.Point, k int, maxR float64, skip func(string) bool) {
	tb.Helper()
	got := f.idx.Nearest(p, k, maxR, skip, nil)
	if want := supplyPick(ranked, k, maxR, skip); !slices.Equal(got, want) {
		tb.Fatalf("Nearest(%v, k=%d, r=%v) over %d drivers:\n got %v\nwant %v", p, k, maxR, len(f.at), supplyBrief(got), supplyBrief(want))
	}
}

func supplyBrief(cs []supply.Candidate) string {
	var sb strings.Builder
	for i, c := range cs {
		if i == 12 {
			fmt.Fprintf(&sb, "... (%d)", len(cs))
			break
		}
		fmt.Fprintf(&sb, "%s@%.3f ", c.DriverID, c.DistanceM)
	}
	return sb.String()
}

// supplyNear is a point within about radiusM of c, uniform over the disc.
func supplyNear(rng *rand.Rand, c supply.Point, radiusM float64) supply.Point {
	r := radiusM * math.Sqrt(rng.Float64())
	theta := 2 * math.Pi * rng.Float64()
	const mPerDeg = 111195.0
	lat := c.Lat + r*math.Cos(theta)/mPerDeg
	cos := max(math.Cos(lat*math.Pi/180), 1e-6)
	lng := c.Lng + r*math.Sin(theta)/(mPerDeg*cos)
	return supply.Point{Lat: max(-90, min(90, lat)), Lng: math.Remainder(lng, 360)}
}

// supplyEdgePoint is a point on, or within a hair of, the boundary of the cell holding
// p: a vertex or a point along an edge.
func supplyEdgePoint(rng *rand.Rand, p supply.Point, res int) supply.Point {
	bd := h3.CellToBoundary(h3.LatLngToCell(h3.NewLatLng(p.Lat, p.Lng), res))
	i := rng.IntN(len(bd))
	a, b := bd[i], bd[(i+1)%len(bd)]
	t := 0.0
	if rng.IntN(3) > 0 {
		t = rng.Float64()
	}
	hair := (rng.Float64() - 0.5) * 1e-9 // degrees: about 0.1 mm either side
	return supply.Point{Lat: a.Lat + t*(b.Lat-a.Lat) + hair, Lng: a.Lng + t*(b.Lng-a.Lng) - hair}
}

func supplyPentagon(res, i int) supply.Point {
	ll := h3.CellToLatLng(h3.Pentagons(res)[i])
	return supply.Point{Lat: ll.Lat, Lng: ll.Lng}
}

// TestSupplyNearestMatchesBruteForce builds random fleets and checks Nearest
// against brute force for many query points, k and radii, before and after moving
// every driver.
func TestSupplyNearestMatchesBruteForce(t *testing.T) {
	type place func(rng *rand.Rand) supply.Point
	inBox := func(b supplyBox) place { return func(rng *rand.Rand) supply.Point { return b.random(rng) } }
	onEdges := func(b supplyBox, res int) place {
		return func(rng *rand.Rand) supply.Point { return supplyEdgePoint(rng, b.random(rng), res) }
	}
	nearPentagons := func(res int, which ...int) place {
		return func(rng *rand.Rand) supply.Point {
			return supplyNear(rng, supplyPentagon(res, which[rng.IntN(len(which))]), 3000)
		}
	}
	tests := []struct {
		name    string
		res     int
		drivers int
		driver  place // where drivers are
		query   place // where riders ask
		moveM   float64
	}{
		{"seoul dense", 9, 10000, inBox(supplySeoul), inBox(supplySeoul), 50},
		{"seoul sparse", 9, 300, inBox(supplySeoul), inBox(supplySeoul), 500},
		{"seoul very sparse", 9, 12, inBox(supplySeoul), inBox(supplySeoul), 3000},
		{"cell edges", 9, 3000, onEdges(supplySeoul, 9), onEdges(supplySeoul, 9), 20},
		{"cell edges res 10", 10, 3000, onEdges(supplySeoul, 10), onEdges(supplySeoul, 10), 20},
		{"pentagons res 9", 9, 3000, nearPentagons(9, 0, 3, 6, 9, 11), nearPentagons(9, 0, 3, 6, 9, 11), 200},
		{"pentagon edges", 9, 1000, func(rng *rand.Rand) supply.Point {
			return supplyEdgePoint(rng, supplyNear(rng, supplyPentagon(9, 4), 800), 9)
		}, nearPentagons(9, 4), 100},
		{"pentagons res 7", 7, 1000, nearPentagons(7, 1, 5, 10), nearPentagons(7, 1, 5, 10), 500},
		{"seoul res 7", 7, 5000, inBox(supplySeoul), inBox(supplySeoul), 300},
		{"seoul res 10", 10, 3000, inBox(supplySeoul), inBox(supplySeoul), 30},
		{"seoul res 0", 0, 500, inBox(supplySeoul), inBox(supplySeoul), 5000},
		{"seoul res 15", 15, 1000, inBox(supplyBox{37.55, 37.551, 126.97, 126.971}), inBox(supplyBox{37.55, 37.551, 126.97, 126.971}), 1},
		{"antimeridian", 9, 2000, inBox(supplyBox{-16.9, -16.7, 179.85, -179.85}), inBox(supplyBox{-16.9, -16.7, 179.85, -179.85}), 100},
		{"high latitude", 9, 2000, inBox(supplyBox{78.15, 78.30, 15.2, 16.2}), inBox(supplyBox{78.15, 78.30, 15.2, 16.2}), 100},
		{"north pole", 8, 1000, inBox(supplyBox{89.95, 90, -180, 180}), inBox(supplyBox{89.95, 90, -180, 180}), 100},
	}
	ks := []int{1, 3, 10, 40}
	radii := []float64{0, 150, 1000, 3000, 25000, math.Inf(1)}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(i), 42))
			f := newSupplyFleet(tt.res)
			for n := range tt.drivers {
				p := tt.driver(rng)
				if n > 0 && rng.IntN(20) == 0 { // a few share a spot: ties go by ID
					p = f.at[fmt.Sprintf("d%05d", rng.IntN(n))]
				}
				f.upsert(t, fmt.Sprintf("d%05d", n), p)
			}
			queries := func() {
				for range 60 {
					p := tt.query(rng)
					if rng.IntN(10) == 0 { // right on top of a driver
						p = f.at[fmt.Sprintf("d%05d", rng.IntN(tt.drivers))]
					}
					ranked := f.ranked(p)
					for _, k := range ks {
						for _, r := range radii {
							f.checkRanked(t, ranked, p, k, r, nil)
						}
					}
				}
			}
			queries()
			for _, id := range slices.Sorted(maps.Keys(f.at)) {
				q := supplyNear(rng, f.at[id], tt.moveM)
				if !f.idx.Move(id, q) {
					t.Fatalf("Move(%s) = false for an indexed driver", id)
				}
				if err := dispatch.Point(q).Validate(); err != nil {
					t.Fatalf("test fleet: %v", err)
				}
				f.at[id] = q
			}
			if got := f.idx.Len(); got != len(f.at) {
				t.Fatalf("Len() = %d after moves, want %d", got, len(f.at))
			}
			queries()
		})
	}
}

// TestSupplyBasics covers the bookkeeping: Move of an absent driver, Remove, Upsert
// twice, Location, Len and resolutions.
func TestSupplyBasics(t *testing.T) {
	a := supply.Point{Lat: 37.5665, Lng: 126.9780}
	b := supply.Point{Lat: 37.4979, Lng: 127.0276} // about 7 km away
	x := supply.New(9)

	if x.Move("ghost", a) {
		t.Error("Move of an absent driver = true")
	}
	if x.Len() != 0 {
		t.Errorf("Move of an absent driver added it: Len() = %d", x.Len())
	}
	if _, ok := x.Location("ghost"); ok {
		t.Error("Location of an absent driver: ok")
	}

	x.Upsert("d1", a)
	x.Upsert("d1", b)
	if x.Len() != 1 {
		t.Errorf("Upsert twice: Len() = %d, want 1", x.Len())
	}
	if got, ok := x.Location("d1"); !ok || got != b {
		t.Errorf("Location after second Upsert = %v, %v; want %v", got, ok, b)
	}
	if got := x.Nearest(a, 5, 1000, nil, nil); len(got) != 0 {
		t.Errorf("driver still found at its old place: %v", got)
	}
	if got := x.Nearest(b, 5, 1000, nil, nil); len(got) != 1 || got[0].DriverID != "d1" || got[0].DistanceM != 0 {
		t.Errorf("Nearest at the new place = %v", got)
	}

	x.Upsert("d2", a)
	if !x.Remove("d1") {
		t.Error("Remove of an indexed driver = false")
	}
	if x.Remove("d1") {
		t.Error("second Remove = true")
	}
	if x.Move("d1", a) {
		t.Error("Move after Remove = true")
	}
	if got := x.Nearest(b, 5, math.Inf(1), nil, nil); len(got) != 1 || got[0].DriverID != "d2" {
		t.Errorf("Nearest after Remove = %v, want only d2", got)
	}
	if x.Len() != 1 {
		t.Errorf("Len() = %d, want 1", x.Len())
	}

	for _, tt := range []struct{ in, want int }{{0, 0}, {7, 7}, {9, 9}, {15, 15}, {-1, 9}, {16, 9}} {
		if got := supply.New(tt.in).Resolution(); got != tt.want {
			t.Errorf("supply.New(%d).Resolution() = %d, want %d", tt.in, got, tt.want)
		}
	}
}

// TestSupplyNearestEdgeCases covers k and radius limits, dst reuse, skip and
// points that are not coordinates.
func TestSupplyNearestEdgeCases(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	f := newSupplyFleet(9)
	for n := range 500 {
		f.upsert(t, fmt.Sprintf("d%03d", n), supplySeoul.random(rng))
	}
	p := f.at["d042"]
	odd := func(id string) bool { return (id[len(id)-1]-'0')%2 == 1 }
	all := func(string) bool { return true }
	var (
		calls  = make(map[string]bool)
		strict bool // while Nearest runs
	)
	once := func(id string) bool {
		if strict && calls[id] {
			t.Errorf("skip(%s) called twice", id)
		}
		calls[id] = true
		return id < "d400" // rejects most drivers, so Nearest must search again
	}

	tests := []struct {
		name string
		p    supply.Point
		k    int
		r    float64
		skip func(string) bool
		want int // -1: compare with brute force only
	}{
		{"k=0", p, 0, 3000, nil, 0},
		{"k<0", p, -3, 3000, nil, 0},
		{"radius 0 on a driver", p, 5, 0, nil, 1},
		{"radius 0 off every driver", supply.Point{Lat: 37.6, Lng: 127.1}, 5, 0, nil, 0},
		{"negative radius", p, 5, -1, nil, 0},
		{"NaN radius", p, 5, math.NaN(), nil, 0},
		{"infinite radius", p, 600, math.Inf(1), nil, 500},
		{"k beyond the fleet", p, 1000, 1e7, nil, 500},
		{"skip odd", p, 10, 3000, odd, 10},
		{"skip all", p, 10, 3000, all, 0},
		{"skip most", p, 20, math.Inf(1), once, 20},
		{"NaN point", supply.Point{Lat: math.NaN(), Lng: 127}, 5, 3000, nil, 0},
		{"latitude out of range", supply.Point{Lat: 91, Lng: 127}, 5, 3000, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clear(calls)
			strict = true
			dst := []supply.Candidate{{DriverID: "stale"}}
			res := f.idx.Nearest(tt.p, tt.k, tt.r, tt.skip, dst)
			strict = false
			if len(res) != tt.want {
				t.Fatalf("got %d candidates, want %d: %v", len(res), tt.want, supplyBrief(res))
			}
			if len(res) > 0 && res[0].DriverID == "stale" && tt.want > 0 {
				t.Fatal("dst was not reset")
			}
			if dispatch.Point(tt.p).Validate() == nil && tt.k > 0 && tt.r >= 0 {
				if want := f.brute(tt.p, tt.k, tt.r, tt.skip); !slices.Equal(res, want) {
					t.Fatalf("got %v\nwant %v", supplyBrief(res), supplyBrief(want))
				}
			}
			for _, c := range res {
				if tt.skip != nil && tt.skip(c.DriverID) {
					t.Errorf("skipped driver %s returned", c.DriverID)
				}
			}
		})
	}

	t.Run("invalid driver point", func(t *testing.T) {
		x := supply.New(9)
		bad := supply.Point{Lat: math.NaN(), Lng: math.NaN()}
		x.Upsert("nan", bad)
		x.Upsert("ok", p)
		if x.Len() != 2 {
			t.Errorf("Len() = %d, want 2", x.Len())
		}
		if got := x.Nearest(p, 5, math.Inf(1), nil, nil); len(got) != 1 || got[0].DriverID != "ok" {
			t.Errorf("Nearest = %v, want only ok", supplyBrief(got))
		}
		if !x.Move("nan", p) {
			t.Error("Move from an invalid point = false")
		}
		if got := x.Nearest(p, 5, 1, nil, nil); len(got) != 2 {
			t.Errorf("after moving to a real point: Nearest = %v, want both", supplyBrief(got))
		}
	})
}

// TestSupplyMoveWithinCellAllocatesNothing checks the hot path: a location update
// that stays in the driver's cell.
func TestSupplyMoveWithinCellAllocatesNothing(t *testing.T) {
	x := supply.New(9)
	rng := rand.New(rand.NewPCG(3, 3))
	for n := range 1000 {
		x.Upsert(fmt.Sprintf("d%03d", n), supplySeoul.random(rng))
	}
	// Jitter of a metre around the centre of d007's cell never leaves it.
	p, _ := x.Location("d007")
	ll := h3.CellToLatLng(h3.LatLngToCell(h3.NewLatLng(p.Lat, p.Lng), 9))
	c := supply.Point{Lat: ll.Lat, Lng: ll.Lng}
	x.Upsert("d007", c)
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		i++
		if !x.Move("d007", supply.Point{Lat: c.Lat + float64(i%7)*1e-6, Lng: c.Lng - float64(i%5)*1e-6}) {
			t.Fatal("Move = false")
		}
	})
	if allocs != 0 {
		t.Errorf("Move within the cell: %v allocations, want 0", allocs)
	}
}

// TestSupplyConcurrent runs writers and readers together (meant for -race) and then
// checks the index against what the writers did.
func TestSupplyConcurrent(t *testing.T) {
	x := supply.New(9)
	const writers, perWriter, rounds = 4, 200, 300
	final := make([]map[string]supply.Point, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			at := make(map[string]supply.Point)
			for n := range perWriter {
				id := fmt.Sprintf("w%d-%03d", w, n)
				at[id] = supplySeoul.random(rng)
				x.Upsert(id, at[id])
			}
			for range rounds {
				id := fmt.Sprintf("w%d-%03d", w, rng.IntN(perWriter))
				switch rng.IntN(10) {
				case 0:
					x.Remove(id)
					delete(at, id)
				case 1:
					at[id] = supplySeoul.random(rng)
					x.Upsert(id, at[id])
				default:
					if p, ok := at[id]; ok {
						at[id] = supplyNear(rng, p, 300)
						if !x.Move(id, at[id]) {
							t.Errorf("Move(%s) = false", id)
						}
					} else if x.Move(id, supplySeoul.random(rng)) {
						t.Errorf("Move(%s) of a removed driver = true", id)
					}
				}
			}
			final[w] = at
		})
	}
	for r := range 2 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(99, uint64(r)))
			var dst []supply.Candidate
			skip := func(id string) bool { return strings.HasSuffix(id, "7") }
			for range rounds {
				p := supplySeoul.random(rng)
				dst = x.Nearest(p, 10, 5000, skip, dst)
				for i, c := range dst {
					if c.DistanceM > 5000 || skip(c.DriverID) || c.DistanceM != supply.DistanceM(p, c.Location) {
						t.Errorf("bad candidate %+v", c)
					}
					if i > 0 && dst[i-1].DistanceM > c.DistanceM {
						t.Errorf("candidates out of order: %v", supplyBrief(dst))
					}
				}
			}
		})
	}
	wg.Wait()

	f := newSupplyFleet(9)
	f.idx = x
	for _, at := range final {
		for id, p := range at {
			f.at[id] = p
		}
	}
	if x.Len() != len(f.at) {
		t.Fatalf("Len() = %d, want %d", x.Len(), len(f.at))
	}
	rng := rand.New(rand.NewPCG(5, 5))
	for range 100 {
		f.check(t, supplySeoul.random(rng), 10, 3000, nil)
	}
}
