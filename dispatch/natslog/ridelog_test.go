package natslog_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/natslog"
)

func TestRideLogLatestPerRide(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	open := func(region string) (*natslog.RideLog, func()) {
		nc, stop := mustConnect(t, dir)
		l, err := natslog.OpenRideLog(ctx, nc, region, 1)
		if err != nil {
			stop()
			t.Fatal(err)
		}
		return l, stop
	}
	l, stop := open("seoul")
	statuses := []dispatch.RideStatus{dispatch.RideSearching, dispatch.RideMatched, dispatch.RideArrived}
	for i := range 5 {
		for v, st := range statuses[:1+i%3] {
			r := dispatch.Ride{ID: fmt.Sprintf("r_%d", i), Status: st, DriverID: "d-1", Version: uint64(v + 1)}
			if err := l.Append(ctx, []dispatch.Ride{r}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Appending the same version twice (a retry) does not add a newer state.
	if err := l.Append(ctx, []dispatch.Ride{{ID: "r_0", Status: dispatch.RideSearching, Version: 1}}); err != nil {
		t.Fatal(err)
	}
	stop()
	// Another region on the same NATS sees none of these rides.
	other, stopOther := open("busan")
	if err := other.Latest(ctx, func(r dispatch.Ride) error { return fmt.Errorf("busan read seoul's ride %s", r.ID) }); err != nil {
		t.Fatal(err)
	}
	stopOther()
	l, stop = open("seoul") // durable across a restart
	defer stop()
	got := map[string]dispatch.Ride{}
	if err := l.Latest(ctx, func(r dispatch.Ride) error { got[r.ID] = r; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 {
		t.Fatalf("%d rides, want 5: %+v", len(got), got)
	}
	for i := range 5 {
		r := got[fmt.Sprintf("r_%d", i)]
		if want := statuses[i%3]; r.Status != want || r.Version != uint64(i%3+1) {
			t.Errorf("ride %d: %s v%d, want %s v%d", i, r.Status, r.Version, want, i%3+1)
		}
	}
}
