package dispatch_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/memstore"
)

// seoulPoint is uniform over Seoul: lat 37.45 to 37.70, lng 126.80 to 127.18.
func seoulPoint(r *rand.Rand) dispatch.Point {
	return dispatch.Point{Lat: 37.45 + 0.25*r.Float64(), Lng: 126.80 + 0.38*r.Float64()}
}

// benchEngine opens an engine with n available drivers spread over Seoul.
func benchEngine(b *testing.B, n int) (*dispatch.Engine, []string) {
	b.Helper()
	ctx := context.Background()
	e := &dispatch.Engine{Store: memstore.New(), Config: dispatch.DefaultConfig(), Now: newClock().Now, Stepped: true}
	if err := e.Open(ctx); err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(7, 7))
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("d-%06d", i)
		_, err1 := e.Drivers().Connect(ctx, ids[i])
		err2 := e.Drivers().UpdateLocation(ctx, ids[i], seoulPoint(r))
		_, err3 := e.Drivers().SetAvailable(ctx, ids[i])
		if err1 != nil || err2 != nil || err3 != nil {
			b.Fatal(err1, err2, err3)
		}
	}
	return e, ids
}

// BenchmarkEngineUpdateLocation is a driver's location frame through the engine: store
// write plus supply-index move, with 100,000 available drivers.
func BenchmarkEngineUpdateLocation(b *testing.B) {
	e, ids := benchEngine(b, 100_000)
	ctx := context.Background()
	r := rand.New(rand.NewPCG(1, 1))
	locs := make([]dispatch.Point, len(ids))
	for i := range locs {
		d, _ := e.Riders().Driver(ctx, ids[i])
		locs[i] = *d.Location
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		j := r.IntN(len(ids))
		locs[j] = near(locs[j], r.NormFloat64()*5, r.NormFloat64()*5)
		if err := e.Drivers().UpdateLocation(ctx, ids[j], locs[j]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEngineMatchBatch200 is one loop step that turns 200 pending requests into
// offers against 100,000 available drivers: nearest queries, the optimal assignment,
// and 200 claim commits. The rides are cancelled between iterations (not timed).
func BenchmarkEngineMatchBatch200(b *testing.B) {
	e, _ := benchEngine(b, 100_000)
	ctx := context.Background()
	r := rand.New(rand.NewPCG(2, 2))
	ids := make([]string, 0, 200)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		ids = ids[:0]
		for range 200 {
			ride, err := e.Riders().RequestRide(ctx, "u-1", seoulPoint(r), seoulPoint(r))
			if err != nil {
				b.Fatal(err)
			}
			ids = append(ids, ride.ID)
		}
		b.StartTimer()
		if err := e.Step(ctx); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if e.Pending() != 0 {
			b.Fatalf("%d rides got no offer", e.Pending())
		}
		for _, id := range ids {
			if _, err := e.Riders().CancelRide(ctx, id); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
	}
}
