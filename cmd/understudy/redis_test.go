package main

import (
	"context"
	"testing"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/redisstore/redistest"
)

// With --redis, a restarted region finds its drivers and rides where they were.
func TestServeWithRedisKeepsStateAcrossRestart(t *testing.T) {
	ctx := context.Background()
	url := redistest.URL(t)
	dataDir := t.TempDir()
	args := []string{"--redis", url, "--region", "seoul", "--data-dir", dataDir, "--match-interval", "0"}

	first := mustServe(t, args...)
	if first.storeName() != "redis" {
		t.Fatalf("store = %s, want redis", first.storeName())
	}
	e := first.engine
	p := dispatch.Point{Lat: 37.4979, Lng: 127.0276}
	for _, id := range []string{"d-1", "d-2"} {
		if _, err := e.Connect(ctx, id); err != nil {
			t.Fatal(err)
		}
		if err := e.UpdateLocation(ctx, id, p); err != nil {
			t.Fatal(err)
		}
		if _, err := e.SetAvailable(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	ride, err := e.RequestRide(ctx, "u-1", p, dispatch.Point{Lat: 37.5547, Lng: 126.9707})
	if err != nil {
		t.Fatal(err)
	}
	offered := waitFor(t, "an offer", func() (dispatch.Ride, bool) {
		r, err := e.Ride(ctx, ride.ID)
		return r, err == nil && r.Offer != nil
	})
	if _, err := e.Accept(ctx, offered.Offer.DriverID, offered.Offer.ID); err != nil {
		t.Fatal(err)
	}

	second := mustServe(t, args...)
	got, err := second.engine.Ride(ctx, ride.ID)
	if err != nil || got.Status != dispatch.RideMatched || got.DriverID != offered.Offer.DriverID {
		t.Fatalf("ride after restart = %+v, %v", got, err)
	}
	if second.engine.Available() != 1 {
		t.Fatalf("available after restart = %d, want the other driver", second.engine.Available())
	}
	if _, err := second.engine.Arrived(ctx, got.DriverID, ride.ID); err != nil {
		t.Fatalf("the trip does not carry on after restart: %v", err)
	}
}
