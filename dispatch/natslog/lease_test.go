package natslog_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
	"github.com/understudy/understudy/dispatch/memstore"
	"github.com/understudy/understudy/dispatch/natslog"
)

// TestRegionTakingAnAreaSaysSoForRidesItLacks: while a region adopts the rides of an
// area it has just taken, a ride it does not have answers 503 no_lease with a
// Retry-After (it may be one of the area's, not adopted yet), not 404; once the area
// is served, an unknown ride is not found again.
func TestRegionTakingAnAreaSaysSoForRidesItLacks(t *testing.T) {
	nc, stop := mustConnect(t, t.TempDir())
	defer stop()
	d, err := dispatch.ParseDeployment([]byte(`{"lease_ttl": "3s",
		"regions": [{"name": "seoul", "url": "http://127.0.0.1:9101", "successor": "busan"},
			{"name": "busan", "url": "http://127.0.0.1:9102", "successor": "daegu"},
			{"name": "daegu", "url": "http://127.0.0.1:9103", "successor": "seoul"}],
		"areas": [{"name": "gangbuk", "region": "seoul", "cells": ["8630e1d87ffffff"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	log, err := natslog.OpenRideLog(ctx, nc, "seoul", 1)
	if err != nil {
		t.Fatal(err)
	}
	leases, err := natslog.OpenLeases(ctx, nc, d, "seoul", log, 1)
	if err != nil {
		t.Fatal(err)
	}
	e := &dispatch.Engine{Store: memstore.New(), Log: log, Region: "seoul", Config: dispatch.DefaultConfig(), Now: time.Now, Stepped: true}
	e.Router = &dispatch.Router{Deployment: d, Region: "seoul", Serving: leases}
	adopting, release := make(chan struct{}), make(chan struct{})
	var released sync.Once
	unblock := func() { released.Do(func() { close(release) }) }
	defer unblock() // before Close, which waits for the adoption
	leases.Adopt = func(ctx context.Context, area string) (int, error) {
		close(adopting)
		<-release
		return e.Adopt(ctx, area)
	}
	if leases.Taking() {
		t.Fatal("Taking before the lease table runs")
	}
	if err := leases.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer leases.Close()
	defer unblock()
	<-adopting

	_, err = e.Riders().Ride(ctx, "r_unknown")
	var de *dispatch.Error
	if !leases.Taking() || !errors.As(err, &de) || de.Code != dispatch.ECodeNoLease || de.RetryAfterS <= 0 {
		t.Fatalf("while adopting: Taking %v, Ride = %v, want no_lease with a Retry-After", leases.Taking(), err)
	}
	unblock()
	dispatchtest.Eventually(t, func() error {
		if by, _, _ := leases.ServedBy("gangbuk"); by != "seoul" {
			return errors.New("gangbuk not served yet")
		}
		return nil
	})
	if _, err := e.Riders().Ride(ctx, "r_unknown"); !errors.Is(err, dispatch.ErrRideNotFound) || leases.Taking() {
		t.Fatalf("once served: Taking %v, Ride = %v, want not found", leases.Taking(), err)
	}
}
