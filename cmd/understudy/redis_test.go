package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
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
		engineOnline(t, e, id, p)
	}
	ride := acceptedRide(t, e, p, dispatch.Point{Lat: 37.5547, Lng: 126.9707})

	second := mustServe(t, args...)
	got, err := second.engine.Riders().Ride(ctx, ride.ID)
	if err != nil || got.Status != dispatch.RideMatched || got.DriverID != ride.DriverID {
		t.Fatalf("ride after restart = %+v, %v", got, err)
	}
	if second.engine.Available() != 1 {
		t.Fatalf("available after restart = %d, want the other driver", second.engine.Available())
	}
	if _, err := second.engine.Drivers().Arrived(ctx, got.DriverID, ride.ID); err != nil {
		t.Fatalf("the trip does not carry on after restart: %v", err)
	}
}

// If Redis itself is lost, the ride log puts the rides in flight back.
func TestRestartAfterRedisLossRestoresRidesFromTheLog(t *testing.T) {
	ctx := context.Background()
	url := redistest.URL(t)
	dataDir := t.TempDir()
	args := []string{"--redis", url, "--region", "busan", "--data-dir", dataDir, "--match-interval", "0"}
	first := mustServe(t, args...)
	e := first.engine
	p := dispatch.Point{Lat: 35.1151, Lng: 129.0422}
	engineOnline(t, e, "d-1", p)
	matched := acceptedRide(t, e, p, dispatch.Point{Lat: 35.1796, Lng: 129.0756})
	if _, err := e.Drivers().Arrived(ctx, "d-1", matched.ID); err != nil {
		t.Fatal(err)
	}
	searching, err := e.Riders().RequestRide(ctx, "u-2", dispatch.Point{Lat: 35.10, Lng: 129.03}, p)
	if err != nil {
		t.Fatal(err)
	}
	stopServer(t, first)

	opts, _ := redis.ParseURL(url)
	rc := redis.NewClient(opts)
	defer rc.Close()
	if err := rc.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}

	second := mustServe(t, args...)
	got, err := second.engine.Riders().Ride(ctx, matched.ID)
	if err != nil || got.Status != dispatch.RideArrived || got.DriverID != "d-1" {
		t.Fatalf("matched ride after Redis loss = %+v, %v", got, err)
	}
	if d, err := second.engine.Riders().Driver(ctx, "d-1"); err != nil || d.State != dispatch.DriverEnRoute || d.RideID != matched.ID {
		t.Fatalf("its driver after Redis loss = %+v, %v", d, err)
	}
	if got, err := second.engine.Riders().Ride(ctx, searching.ID); err != nil || got.Status != dispatch.RideSearching {
		t.Fatalf("searching ride after Redis loss = %+v, %v", got, err)
	}
	if second.engine.Pending() != 1 {
		t.Fatalf("pending = %d, want the searching ride queued again", second.engine.Pending())
	}
	// The trip carries on to the ledger.
	if _, err := second.engine.Drivers().Start(ctx, "d-1", matched.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := second.engine.Drivers().Complete(ctx, "d-1", matched.ID); err != nil {
		t.Fatal(err)
	}
}

// With --redis, an Idempotency-Key used on one process is honoured by another on the
// same Redis: a retry that lands on a restarted (or another) process replays the ride.
func TestIdempotencyKeysLiveInRedis(t *testing.T) {
	url := redistest.URL(t)
	args := []string{"--redis", url, "--region", "jeju", "--data-dir", t.TempDir()}
	first := mustServe(t, args...)
	tok, err := first.keys.Sign(dispatch.Identity{Subject: "u-9", Role: dispatch.RoleRider}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	post := func(s *server) (int, string) {
		body := `{"pickup":{"lat":33.4996,"lng":126.5312},"dropoff":{"lat":33.5104,"lng":126.4913}}`
		req, _ := http.NewRequest("POST", "http://"+s.Addr()+"/v1/rides", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "retry-me")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r struct{ ID string }
		_ = json.NewDecoder(resp.Body).Decode(&r)
		return resp.StatusCode, r.ID
	}
	code, id := post(first)
	stopServer(t, first)
	second := mustServe(t, args...)
	code2, id2 := post(second)
	if code != 201 || code2 != 201 || id == "" || id2 != id {
		t.Fatalf("first %d %s, retry on another process %d %s: want the same ride", code, id, code2, id2)
	}
}

// With --redis, a rider's rate limit holds across processes: alternating between two
// servers does not double the burst.
func TestRateLimitSharedAcrossProcesses(t *testing.T) {
	url := redistest.URL(t)
	dataDir := t.TempDir() // one dev secret for both, so one token works on both
	args := []string{"--redis", url, "--region", "ulsan", "--data-dir", dataDir, "--rider-rate", "0.1", "--rider-burst", "3"}
	servers := []*server{mustServe(t, args...), mustServe(t, args...)}
	tok, err := servers[0].keys.Sign(dispatch.Identity{Subject: "u-7", Role: dispatch.RoleRider}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var codes []int
	for i := range 6 {
		body := `{"pickup":{"lat":35.5384,"lng":129.3114},"dropoff":{"lat":35.5396,"lng":129.3320}}`
		req, _ := http.NewRequest("POST", "http://"+servers[i%2].Addr()+"/v1/estimates", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
		if resp.StatusCode == 429 && resp.Header.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
	}
	if fmt.Sprint(codes) != "[200 200 200 429 429 429]" {
		t.Fatalf("statuses %v, want the burst of 3 then 429 across both servers", codes)
	}
	// A driver's pay reads share the same kind of bucket.
	codes = nil
	for i := range 6 {
		code, hdr, _ := authGet(t, servers[i%2], "/v1/driver/trips", "d-7", dispatch.RoleDriver)
		codes = append(codes, code)
		if code == 429 && hdr.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
	}
	if fmt.Sprint(codes) != "[200 200 200 429 429 429]" {
		t.Fatalf("driver reads %v, want the burst of 3 then 429 across both servers", codes)
	}
}

// Redis is flushed under a running region (its hot state lost, NATS alive): at its
// next sweep the region notices (the store's generation changed) and puts every ride
// back from the ride log, ids and versions intact, with the driver its active ride
// binds; the searching ride is matched again and the trip carries on to the ledger.
func TestRedisFlushedUnderARunningRegionIsRefilled(t *testing.T) {
	ctx := context.Background()
	url := redistest.URL(t)
	s := mustServe(t, "--redis", url, "--region", "busan", "--match-interval", "0")
	e := s.engine
	p := dispatch.Point{Lat: 35.1151, Lng: 129.0422}
	engineOnline(t, e, "d-1", p)
	matched := acceptedRide(t, e, p, dispatch.Point{Lat: 35.1796, Lng: 129.0756})
	arrived, err := e.Drivers().Arrived(ctx, "d-1", matched.ID)
	if err != nil {
		t.Fatal(err)
	}
	searching, err := e.Riders().RequestRide(ctx, "u-2", dispatch.Point{Lat: 35.10, Lng: 129.03}, p)
	if err != nil {
		t.Fatal(err)
	}

	opts, _ := redis.ParseURL(url)
	rc := redis.NewClient(opts)
	defer rc.Close()
	if err := rc.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	dispatchtest.Eventually(t, func() error {
		got, err := e.Riders().Ride(ctx, matched.ID)
		if err != nil {
			return fmt.Errorf("matched ride after the flush: %w", err)
		}
		if got.Status != dispatch.RideArrived || got.DriverID != "d-1" || got.Version != arrived.Version {
			t.Fatalf("matched ride refilled as %+v, want arrived with d-1 at version %d", got, arrived.Version)
		}
		if _, err := e.Riders().Ride(ctx, searching.ID); err != nil { // refilled one ride at a time
			return fmt.Errorf("searching ride after the flush: %w", err)
		}
		return nil
	})
	if d, err := e.Riders().Driver(ctx, "d-1"); err != nil || d.State != dispatch.DriverEnRoute || d.RideID != matched.ID {
		t.Fatalf("its driver after the refill = %+v, %v", d, err)
	}
	if got, err := e.Riders().Ride(ctx, searching.ID); err != nil || got.Status != dispatch.RideSearching {
		t.Fatalf("searching ride after the refill = %+v, %v", got, err)
	}
	// The searching ride is offered to a driver who comes online now.
	engineOnline(t, e, "d-2", dispatch.Point{Lat: 35.1001, Lng: 129.0301})
	if r := waitOffered(t, e, searching.ID); r.Offer.DriverID != "d-2" {
		t.Errorf("searching ride %s offered to %s, want d-2", searching.ID, r.Offer.DriverID)
	}
	if _, err := e.Drivers().Start(ctx, "d-1", matched.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Drivers().Complete(ctx, "d-1", matched.ID); err != nil {
		t.Fatal(err)
	}
	if entry, err := s.ledger.Entry(ctx, "d-1", matched.ID); err != nil || entry.RideID != matched.ID {
		t.Errorf("ledger entry of the trip: %+v %v", entry, err)
	}
}
