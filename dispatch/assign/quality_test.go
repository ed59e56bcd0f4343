package assign_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/assign"
)

// assignHubs are where Seoul's ride requests bunch up.
var assignHubs = []dispatch.Point{
	assignGangnam,                 // Gangnam station
	{Lat: 37.5572, Lng: 126.9245}, // Hongdae
	{Lat: 37.5547, Lng: 126.9707}, // Seoul station
	{Lat: 37.5133, Lng: 127.1000}, // Jamsil
}

// assignSeoulRequests returns n pickups: 70% within a kilometre or two of a hub (normal,
// sigma 800 m), the rest anywhere in Seoul.
func assignSeoulRequests(rng *rand.Rand, n int) []dispatch.Point {
	ps := assignUniformPoints(rng, n)
	for i := range ps {
		if rng.Float64() < 0.7 {
			hub := assignHubs[rng.IntN(len(assignHubs))]
			ps[i] = assignOffset(hub, 800*rng.NormFloat64(), 800*rng.NormFloat64())
		}
	}
	return ps
}

// assignSeoulDrivers returns n free drivers: 80% anywhere in Seoul, 20% cruising within
// a few kilometres of a hub (normal, sigma 2.5 km).
func assignSeoulDrivers(rng *rand.Rand, n int) []dispatch.Point {
	ps := assignUniformPoints(rng, n)
	for i := range ps {
		if rng.Float64() < 0.2 {
			hub := assignHubs[rng.IntN(len(assignHubs))]
			ps[i] = assignOffset(hub, 2500*rng.NormFloat64(), 2500*rng.NormFloat64())
		}
	}
	return ps
}

// assignStats sums up the pickups of one matching method over some batches.
type assignStats struct {
	rides   int
	pickups []float64 // metres, one per matched ride
}

func (s *assignStats) add(o assignStats) {
	s.rides += o.rides
	s.pickups = append(s.pickups, o.pickups...)
}

func (s *assignStats) total() float64 {
	t := 0.0
	for _, p := range s.pickups {
		t += p
	}
	return t
}

func (s *assignStats) mean() float64 { return s.total() / float64(max(len(s.pickups), 1)) }

func (s *assignStats) p95() float64 {
	if len(s.pickups) == 0 {
		return 0
	}
	sorted := slices.Sorted(slices.Values(s.pickups))
	return sorted[int(math.Ceil(0.95*float64(len(sorted))))-1]
}

// TestMatchQualityReport compares immediate greedy matching with batched optimal
// assignment on simulated Seoul batches at three loads and prints the figures. Batched
// runs three ways: over each ride's 10 nearest drivers (the planned candidate list);
// the same, then re-batching the rides left over against the drivers left over (what
// later ticks would do, without their delay); and over every driver within reach (the
// exact optimum, slower). It checks that the optimum never serves fewer rides than any
// other method nor drives further for as many, that ten candidates keep up with greedy
// under light load, and that batching gains a clear margin under medium and heavy load.
func TestMatchQualityReport(t *testing.T) {
	const (
		nDrivers = 2000
		k        = 10   // candidates per ride for the production batch
		radius   = 3000 // metres, for every method
	)
	seeds := 2 // the exact optimum at heavy load takes most of the time, ~1.5 s per batch with -race
	if testing.Short() {
		seeds = 1
	}
	loads := []struct {
		name          string
		requests      int
		kKeepsUp      bool    // the k-nearest batch serves as many rides as greedy
		minDistGain   float64 // % less total pickup for the optimum at equal rides served
		minServedGain float64 // % more rides served by the optimum
	}{
		{name: "light", requests: 50, kKeepsUp: true},
		{name: "medium", requests: 500, minDistGain: 8},
		{name: "heavy", requests: 1800, minServedGain: 5},
	}

	var table strings.Builder
	fmt.Fprintf(&table, "\n| load | method | rides | matched | total pickup km | mean m | p95 m |\n")
	fmt.Fprintf(&table, "|---|---|--:|--:|--:|--:|--:|\n")
	for _, load := range loads {
		var greedy, nearest, rebatched, optimum assignStats
		for seed := range seeds {
			rng := rand.New(rand.NewPCG(uint64(seed), uint64(load.requests)))
			drivers := assignSeoulDrivers(rng, nDrivers)
			requests := assignSeoulRequests(rng, load.requests)
			grid := newAssignGrid(drivers)

			// Immediate: in arrival order, each request takes its nearest free driver.
			g := assignStats{rides: len(requests)}
			busy := make([]bool, nDrivers)
			for _, p := range requests {
				for _, c := range grid.near(p, radius) {
					if !busy[c.index] {
						busy[c.index] = true
						g.pickups = append(g.pickups, c.distM)
						break
					}
				}
			}
			// Batched: one optimal assignment over the whole batch, each ride with its k
			// nearest drivers not taken yet; rounds > 1 re-batches the rides left over
			// against the drivers left over, while that serves anyone.
			batch := func(k, rounds int) assignStats {
				s := assignStats{rides: len(requests)}
				taken := make([]bool, nDrivers)
				left := make([]int, len(requests))
				for i := range left {
					left[i] = i
				}
				for range rounds {
					var edges []assign.Edge
					for i, r := range left {
						n := 0
						for _, c := range grid.near(requests[r], radius) {
							if !taken[c.index] && n < k {
								edges = append(edges, assign.Edge{Ride: i, Driver: c.index, Cost: c.distM})
								n++
							}
						}
					}
					got := assign.Optimal(len(left), nDrivers, edges)
					var next []int
					for i, d := range got {
						if d < 0 {
							next = append(next, left[i])
							continue
						}
						taken[d] = true
						s.pickups = append(s.pickups, dispatch.DistanceM(requests[left[i]], drivers[d]))
					}
					if len(next) == len(left) {
						break
					}
					left = next
				}
				return s
			}
			n, r, o := batch(k, 1), batch(k, len(requests)), batch(nDrivers, 1)

			// The optimum's edges include greedy's and the k-nearest batch's choices, so
			// it serves at least as many rides as either, and no further for as many.
			for _, other := range []struct {
				name string
				s    assignStats
			}{{"greedy", g}, {fmt.Sprintf("%d-nearest batch", k), n}, {"re-batched", r}} {
				if len(o.pickups) < len(other.s.pickups) ||
					len(o.pickups) == len(other.s.pickups) && o.total() > other.s.total()+1e-6 {
					t.Errorf("%s seed %d: optimum served %d rides with %.0f m of pickups, %s %d with %.0f m",
						load.name, seed, len(o.pickups), o.total(), other.name, len(other.s.pickups), other.s.total())
				}
			}
			if len(n.pickups) == len(g.pickups) && n.total() > g.total()+1e-6 {
				t.Errorf("%s seed %d: %d-nearest batch drove %.0f m for %d rides, greedy %.0f m",
					load.name, seed, k, n.total(), len(n.pickups), g.total())
			}
			if load.kKeepsUp && len(n.pickups) < len(g.pickups) {
				t.Errorf("%s seed %d: %d-nearest batch served %d rides, greedy %d",
					load.name, seed, k, len(n.pickups), len(g.pickups))
			}
			greedy.add(g)
			nearest.add(n)
			rebatched.add(r)
			optimum.add(o)
		}

		for _, m := range []struct {
			name string
			s    *assignStats
		}{
			{"greedy nearest-first", &greedy},
			{fmt.Sprintf("batched, %d nearest", k), &nearest},
			{fmt.Sprintf("batched, %d nearest, leftovers re-batched", k), &rebatched},
			{fmt.Sprintf("batched, all within %d m", radius), &optimum},
		} {
			fmt.Fprintf(&table, "| %s | %s | %d | %d | %.1f | %.0f | %.0f |\n", load.name, m.name,
				m.s.rides, len(m.s.pickups), m.s.total()/1000, m.s.mean(), m.s.p95())
		}
		servedGain := 100 * (float64(len(optimum.pickups))/float64(len(greedy.pickups)) - 1)
		distGain := 100 * (1 - optimum.total()/greedy.total())
		if len(optimum.pickups) != len(greedy.pickups) {
			distGain = 0 // totals over different numbers of rides do not compare
		}
		vsGreedy := func(s *assignStats) string {
			return fmt.Sprintf("%+.1f%% rides served, %+.1f%% mean pickup",
				100*(float64(len(s.pickups))/float64(len(greedy.pickups))-1), 100*(s.mean()/greedy.mean()-1))
		}
		t.Logf("%s load vs greedy: optimum %s (total pickup %.1f%% lower at equal rides served); %d nearest %s; re-batched %s",
			load.name, vsGreedy(&optimum), distGain, k, vsGreedy(&nearest), vsGreedy(&rebatched))
		if distGain < load.minDistGain {
			t.Errorf("%s load: optimum total pickup only %.1f%% below greedy's, want >= %.0f%%", load.name, distGain, load.minDistGain)
		}
		if servedGain < load.minServedGain {
			t.Errorf("%s load: optimum served only %.1f%% more rides than greedy, want >= %.0f%%", load.name, servedGain, load.minServedGain)
		}
	}
	t.Logf("%d drivers, %d seeds per load:%s", nDrivers, seeds, table.String())
}
