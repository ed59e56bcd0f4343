package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/driver"
	"github.com/understudy/understudy/driver/drivertest"
	riderclient "github.com/understudy/understudy/rider/client"
)

// Cancel follows the contract, through the rider API and the driver socket: a trip in
// progress is its driver's to end (409 to the rider); a cancel after the driver
// arrived pays the driver the configured fee through the ledger, once, however the
// cancel is retried and raced; a cancel before that pays nothing.
func TestCancelFollowsTheContract(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "understudy.json")
	if err := os.WriteFile(conf, []byte(`{"fare-cancellation-fee":2500}`), 0o600); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(dir, "data")
	s := mustServe(t, "--config", conf, "--data-dir", dataDir, "--match-interval", "0")
	rctx := riderCtx(t)
	alice := riderClient(t, s, "u-alice", dispatch.RoleRider)
	drv := mustOnline(t, s, "d-1", near)
	// assigned has alice request a ride and d-1 accept it.
	assigned := func() string {
		t.Helper()
		ride, err := alice.RequestRide(rctx, riderTrip, "")
		if err != nil {
			t.Fatal(err)
		}
		o := drivertest.Next(t, drv, driver.TypeOffer)
		send(t, drv.Accept(ctx(t), o.OfferID))
		drivertest.Next(t, drv, driver.TypeAssigned)
		return ride.ID
	}
	step := func(do func(context.Context, string) error, id string, want dispatch.RideStatus) {
		t.Helper()
		send(t, do(ctx(t), id))
		if m := drivertest.Next(t, drv, driver.TypeRide); m.Ride.Status != want {
			t.Fatalf("ride %s is %s, want %s", id, m.Ride.Status, want)
		}
	}

	// In progress: the rider cannot cancel; the driver completes and is paid.
	trip := assigned()
	step(drv.Arrived, trip, dispatch.RideArrived)
	step(drv.Start, trip, dispatch.RideInProgress)
	if _, err := alice.Cancel(rctx, trip); riderclient.Code(err) != "conflict" {
		t.Fatalf("cancel in progress: %v, want 409 conflict", err)
	}
	step(drv.Complete, trip, dispatch.RideCompleted)

	// After the driver arrived: eight cancels at once all answer the cancelled ride,
	// the driver hears it once and can no longer start, and the fee is paid once. (On
	// a client of its own: the OpenAPI-checking one validates one answer at a time.)
	late := assigned()
	step(drv.Arrived, late, dispatch.RideArrived)
	racer := riderclient.New("http://"+s.Addr(), mustToken(t, s, "u-alice", dispatch.RoleRider))
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	racer.HTTP = &http.Client{Transport: tr}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r, err := racer.Cancel(rctx, late); err != nil || r.Status != dispatch.RideCancelled {
				t.Errorf("cancel after arrival: %+v %v", r, err)
			}
		}()
	}
	wg.Wait()
	if m := drivertest.Next(t, drv, driver.TypeRideCancelled); m.RideID != late {
		t.Fatalf("ride_cancelled for %s, want %s", m.RideID, late)
	}
	send(t, drv.Start(ctx(t), late))
	if m := drivertest.Next(t, drv, driver.TypeError); m.Code != dispatch.ECodeConflict {
		t.Fatalf("start after the cancel: %s, want a conflict", m.Raw)
	}
	if r, err := alice.Cancel(rctx, late); err != nil || r.Status != dispatch.RideCancelled {
		t.Fatalf("cancel retried: %+v %v", r, err)
	}

	// Before the driver arrived: no fee.
	early := assigned()
	if _, err := alice.Cancel(rctx, early); err != nil {
		t.Fatal(err)
	}
	drivertest.Next(t, drv, driver.TypeRideCancelled)

	// The fee is in the driver's trips, earnings and the export, as what it is (read
	// as JSON, as an app reads it).
	code, _, body := authGet(t, s, "/v1/driver/trips", "d-1", dispatch.RoleDriver)
	var trips struct{ Trips []map[string]any }
	if err := json.Unmarshal([]byte(body), &trips); code != 200 || err != nil || len(trips.Trips) != 2 {
		t.Fatalf("trips = %d %s, want the trip and the fee", code, body)
	}
	paid, fee := trips.Trips[0], trips.Trips[1]
	if paid["ride_id"] != trip || paid["kind"] != "trip" || paid["started_at"] == nil {
		t.Errorf("first entry %v, want the completed trip %s", paid, trip)
	}
	if fee["ride_id"] != late || fee["kind"] != "cancellation_fee" || fmt.Sprint(fee["fare"]) != "map[amount:2500 currency:KRW]" ||
		fee["distance_m"] != 0.0 || fee["started_at"] != nil || fee["completed_at"] == nil {
		t.Errorf("second entry %v, want the 2500 KRW fee of %s", fee, late)
	}
	tripFare := paid["fare"].(map[string]any)["amount"].(float64)
	code, _, body = authGet(t, s, "/v1/driver/earnings", "d-1", dispatch.RoleDriver)
	var earn map[string]any
	if err := json.Unmarshal([]byte(body), &earn); code != 200 || err != nil || earn["trips"] != 1.0 || earn["cancellation_fees"] != 1.0 ||
		fmt.Sprint(earn["fares"]) != fmt.Sprintf("[map[amount:%v currency:KRW]]", tripFare+2500) || earn["distance_m"] != paid["distance_m"] {
		t.Errorf("earnings = %d %s, want one trip and one fee", code, body)
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"ledger", "export", "--data-dir", dataDir}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	kinds := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("export line %q: %v", line, err)
		}
		id := fmt.Sprint(e["ride_id"])
		if _, dup := kinds[id]; dup {
			t.Errorf("ride %s exported twice", id)
		}
		kinds[id] = fmt.Sprint(e["kind"])
	}
	if len(kinds) != 2 || kinds[trip] != "trip" || kinds[late] != "cancellation_fee" {
		t.Errorf("export = %v, want the trip and the fee", kinds)
	}
}
