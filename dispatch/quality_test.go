package dispatch_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/understudy/understudy/dispatch"
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

// TestMatchQualityReport compares batched optimal assignment with immediate greedy
// matching on simulated Seoul batches at three loads, prints the figures and checks
// that batching never serves fewer rides, never drives further for the same number of
// rides, and saves a clear share of pickup distance under heavy load.
func TestMatchQualityReport(t *testing.T) {
	const (
		nDrivers = 2000
		k        = 10   // candidates per ride for the batched assignment
		radius   = 3000 // metres, for both methods
	)
	seeds := 5
	if testing.Short() {
		seeds = 2
	}
	loads := []struct {
		name     string
		requests int
		minGain  float64 // % by which batched mean pickup must beat greedy's
	}{
		{"light", 50, 0},
		{"medium", 500, 0},
		{"heavy", 1800, 10},
	}

	var table strings.Builder
	fmt.Fprintf(&table, "\n| load | method | rides | matched | total pickup km | mean m | p95 m |\n")
	fmt.Fprintf(&table, "|---|---|--:|--:|--:|--:|--:|\n")
	for _, load := range loads {
		var batched, greedy assignStats
		for seed := range seeds {
			rng := rand.New(rand.NewPCG(uint64(seed), uint64(load.requests)))
			drivers := assignSeoulDrivers(rng, nDrivers)
			requests := assignSeoulRequests(rng, load.requests)
			grid := newAssignGrid(drivers)

			// (1) Batched: one optimal assignment over each ride's k nearest drivers.
			var b assignStats
			got := dispatch.AssignOptimal(len(requests), nDrivers, grid.edges(requests, k, radius))
			for r, d := range got {
				if d >= 0 {
					b.pickups = append(b.pickups, dispatch.DistanceM(requests[r], drivers[d]))
				}
			}

			// (2) Immediate: in arrival order, each request takes its nearest free driver.
			var g assignStats
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

			if len(b.pickups) < len(g.pickups) {
				t.Errorf("%s seed %d: batched matched %d rides, greedy %d", load.name, seed, len(b.pickups), len(g.pickups))
			}
			if len(b.pickups) == len(g.pickups) && b.total() > g.total()+1e-6 {
				t.Errorf("%s seed %d: batched drove %.0f m for %d rides, greedy %.0f m",
					load.name, seed, b.total(), len(b.pickups), g.total())
			}
			batched.rides += len(requests)
			batched.pickups = append(batched.pickups, b.pickups...)
			greedy.rides += len(requests)
			greedy.pickups = append(greedy.pickups, g.pickups...)
		}

		for _, m := range []struct {
			name string
			s    *assignStats
		}{{"batched", &batched}, {"greedy", &greedy}} {
			fmt.Fprintf(&table, "| %s | %s | %d | %d | %.1f | %.0f | %.0f |\n", load.name, m.name,
				m.s.rides, len(m.s.pickups), m.s.total()/1000, m.s.mean(), m.s.p95())
		}
		gainTotal := 100 * (1 - batched.total()/greedy.total())
		gainMean := 100 * (1 - batched.mean()/greedy.mean())
		gainP95 := 100 * (1 - batched.p95()/greedy.p95())
		fmt.Fprintf(&table, "| %s | improvement | | %+d | %.1f%% | %.1f%% | %.1f%% |\n", load.name,
			len(batched.pickups)-len(greedy.pickups), gainTotal, gainMean, gainP95)
		if gainMean < load.minGain {
			t.Errorf("%s load: batched mean pickup %.0f m is only %.1f%% better than greedy's %.0f m, want >= %.0f%%",
				load.name, batched.mean(), gainMean, greedy.mean(), load.minGain)
		}
	}
	t.Logf("%d drivers, %d seeds, batched = AssignOptimal over %d nearest within %d m:%s",
		nDrivers, seeds, k, radius, table.String())
}
