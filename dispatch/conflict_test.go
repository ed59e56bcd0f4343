package dispatch_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/memstore"
	"github.com/understudy/understudy/dispatch/prommetrics"
)

// racingStore commits a change of ride rideID through the real store just before the
// engine's first commit of it, as another replica racing it would.
type racingStore struct {
	dispatch.Store
	rideID string
	once   sync.Once
}

func (s *racingStore) Commit(ctx context.Context, tx dispatch.Tx) error {
	for _, r := range tx.Rides {
		if r.ID == s.rideID {
			s.once.Do(func() {
				cur, err := s.Store.Ride(ctx, r.ID)
				if err == nil {
					cur.UpdatedAt = cur.UpdatedAt.Add(time.Millisecond)
					err = s.Store.Commit(ctx, dispatch.Tx{Rides: []dispatch.Ride{cur}, Epoch: tx.Epoch})
				}
				if err != nil {
					panic(err)
				}
			})
		}
	}
	return s.Store.Commit(ctx, tx)
}

// A commit that loses a race is retried, and counted in
// understudy_dispatch_conflicts_total.
func TestConflictsAreRetriedAndCounted(t *testing.T) {
	st := &racingStore{Store: memstore.New()}
	reg := prometheus.NewRegistry()
	e := &dispatch.Engine{Store: st, Config: dispatch.DefaultConfig(), Stepped: true}
	e.Metrics = prommetrics.New(reg, e)
	if err := e.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	r, err := e.Riders().RequestRide(context.Background(), "u-1", gangnam, seoulStn)
	if err != nil {
		t.Fatal(err)
	}
	st.rideID = r.ID
	if c, err := e.Riders().CancelRide(context.Background(), r.ID); err != nil || c.Status != dispatch.RideCancelled {
		t.Fatalf("cancel after a lost race = %+v, %v; want it cancelled on the retry", c, err)
	}
	if got := counter(t, reg, "understudy_dispatch_conflicts_total"); got != 1 {
		t.Fatalf("understudy_dispatch_conflicts_total = %v, want 1", got)
	}
}

// counter reads a counter without labels from reg.
func counter(tb testing.TB, reg *prometheus.Registry, name string) float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	tb.Fatalf("no counter %s", name)
	return 0
}
