package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
	"github.com/understudy/understudy/dispatch/jwtauth"
	"github.com/understudy/understudy/dispatch/problem"
	"github.com/understudy/understudy/rider"
	riderclient "github.com/understudy/understudy/rider/client"
)

// The rider end-to-end tests run the real `serve` and play drivers through its
// engine directly, so they do not depend on the driver socket.

// Central Seoul: City Hall as the pickup, a driver 55 m from it and one about 1 km away.
var (
	riderTrip   = rider.RideRequest{Pickup: dispatch.Point{Lat: 37.5665, Lng: 126.978}, Dropoff: dispatch.Point{Lat: 37.5512, Lng: 126.9882}}
	riderNearby = dispatch.Point{Lat: 37.5670, Lng: 126.978}
	riderFarOff = dispatch.Point{Lat: 37.5750, Lng: 126.978}
)

// riderWait is how long a test waits for an event: generous, as a correctness test
// must not fail because the machine is busy.
const riderWait = dispatchtest.Patience

// riderHTTPClients holds one HTTP client per server, whose idle connections are closed
// before the server shuts down: a connection the transport dialled but never used
// would otherwise hold http.Server.Shutdown for 5 s. Every exchange is validated
// against docs/openapi.yaml.
var riderHTTPClients sync.Map // *server -> *http.Client

func riderHTTP(tb testing.TB, s *server) *http.Client {
	tb.Helper()
	hc := openAPIClient(tb)
	if c, loaded := riderHTTPClients.LoadOrStore(s, hc); loaded {
		return c.(*http.Client)
	}
	tb.Cleanup(func() { // runs before mustServe's cleanup: registered after it
		hc.CloseIdleConnections()
		riderHTTPClients.Delete(s)
	})
	return hc
}

// riderClient returns an API client for sub with role, retrying quickly.
func riderClient(tb testing.TB, s *server, sub string, role dispatch.Role) *riderclient.Client {
	tb.Helper()
	tok, err := s.keys.Sign(dispatch.Identity{Subject: sub, Role: role}, time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	c := riderclient.New("http://"+s.Addr(), tok)
	c.HTTP = riderHTTP(tb, s)
	c.Backoff, c.MaxBackoff = 5*time.Millisecond, 50*time.Millisecond
	return c
}

func riderCtx(tb testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 3*riderWait)
	tb.Cleanup(cancel)
	return c
}

// riderDriverAt plays driver id coming online at p, through the engine.
func riderDriverAt(tb testing.TB, s *server, id string, p dispatch.Point) {
	tb.Helper()
	ctx := context.Background()
	if _, err := s.engine.Drivers().Connect(ctx, id); err != nil {
		tb.Fatal(err)
	}
	if err := s.engine.Drivers().UpdateLocation(ctx, id, p); err != nil {
		tb.Fatal(err)
	}
	if _, err := s.engine.Drivers().SetAvailable(ctx, id); err != nil {
		tb.Fatal(err)
	}
}

// riderOfferTo waits until driver id holds an offer for rideID and returns its id.
func riderOfferTo(tb testing.TB, s *server, id, rideID string) string {
	tb.Helper()
	d := dispatchtest.Await(tb, func() (dispatch.Driver, error) {
		d, err := s.engine.Riders().Driver(context.Background(), id)
		if err == nil && (d.State != dispatch.DriverOffered || d.RideID != rideID) {
			err = fmt.Errorf("driver %s is %s with ride %q, want offered ride %s", id, d.State, d.RideID, rideID)
		}
		return d, err
	})
	return d.OfferID
}

func riderDriverState(tb testing.TB, s *server, id string) dispatch.Driver {
	tb.Helper()
	d, err := s.engine.Riders().Driver(context.Background(), id)
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// riderNext returns the stream's next ride.
func riderNext(tb testing.TB, st *riderclient.Stream) rider.Ride {
	tb.Helper()
	select {
	case r, ok := <-st.C:
		if !ok {
			tb.Fatalf("stream ended: %v", st.Err())
		}
		return r
	case <-time.After(riderWait):
		tb.Fatalf("no ride event within %s", riderWait)
	}
	return rider.Ride{}
}

func TestRiderTripEndToEnd(t *testing.T) {
	s := mustServe(t, "--match-interval", "0")
	ctx := riderCtx(t)
	alice := riderClient(t, s, "u-alice", dispatch.RoleRider)
	riderDriverAt(t, s, "d-far", riderFarOff)
	riderDriverAt(t, s, "d-near", riderNearby)

	est, err := alice.Estimate(ctx, riderTrip)
	if err != nil || est.PickupETAS == nil || est.Fare.Amount <= 0 {
		t.Fatalf("estimate = %+v, %v; want a fare and an ETA", est, err)
	}
	ride, err := alice.RequestRide(ctx, riderTrip, "")
	if err != nil || ride.Status != dispatch.RideSearching || ride.RiderID != "u-alice" {
		t.Fatalf("request = %+v, %v", ride, err)
	}
	st, err := alice.Follow(ctx, ride.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if first := riderNext(t, st); first.Status != dispatch.RideSearching {
		t.Fatalf("first event %s, want searching", first.Status)
	}

	// The nearest driver is offered first; the other one is left alone.
	nearOffer := riderOfferTo(t, s, "d-near", ride.ID)
	if d := riderDriverState(t, s, "d-far"); d.State != dispatch.DriverAvailable {
		t.Fatalf("d-far is %s while d-near holds the offer", d.State)
	}
	// A decline cascades to the next driver; the decliner is available again.
	if err := s.engine.Drivers().Decline(ctx, "d-near", nearOffer); err != nil {
		t.Fatal(err)
	}
	farOffer := riderOfferTo(t, s, "d-far", ride.ID)
	if d := riderDriverState(t, s, "d-near"); d.State != dispatch.DriverAvailable || d.OfferID != "" {
		t.Fatalf("d-near after declining: %+v", d)
	}

	steps := []struct {
		do   func() (dispatch.Ride, error)
		want dispatch.RideStatus
	}{
		{func() (dispatch.Ride, error) { return s.engine.Drivers().Accept(ctx, "d-far", farOffer) }, dispatch.RideMatched},
		{func() (dispatch.Ride, error) { return s.engine.Drivers().Arrived(ctx, "d-far", ride.ID) }, dispatch.RideArrived},
		{func() (dispatch.Ride, error) { return s.engine.Drivers().Start(ctx, "d-far", ride.ID) }, dispatch.RideInProgress},
		{func() (dispatch.Ride, error) { return s.engine.Drivers().Complete(ctx, "d-far", ride.ID) }, dispatch.RideCompleted},
	}
	for _, step := range steps {
		if _, err := step.do(); err != nil {
			t.Fatalf("%s: %v", step.want, err)
		}
		got := riderNext(t, st)
		if got.Status != step.want || got.Driver == nil || got.Driver.ID != "d-far" {
			t.Fatalf("event %+v, want %s with driver d-far", got, step.want)
		}
		if step.want == dispatch.RideMatched && (got.Driver.Location == nil || *got.Driver.Location != riderFarOff) {
			t.Fatalf("matched event shows the driver at %v, want %v", got.Driver.Location, riderFarOff)
		}
	}
	if _, ok := <-st.C; ok || st.Err() != nil {
		t.Fatalf("stream after completed: open %v, err %v; want it closed cleanly", ok, st.Err())
	}
	if got, err := alice.Ride(ctx, ride.ID); err != nil || got.Status != dispatch.RideCompleted {
		t.Fatalf("GET after the trip = %+v, %v", got, err)
	}
	_, err = alice.Cancel(ctx, ride.ID)
	if e, ok := err.(*riderclient.Error); !ok || e.StatusCode != 409 || e.Code != "conflict" {
		t.Fatalf("cancel after completion: %v, want 409 conflict", err)
	}
	if d := riderDriverState(t, s, "d-far"); d.State != dispatch.DriverAvailable {
		t.Fatalf("d-far after completing is %s, want available", d.State)
	}
}

func TestRiderCancelWhileSearchingRevokesTheOffer(t *testing.T) {
	s := mustServe(t, "--match-interval", "0")
	ctx := riderCtx(t)
	alice := riderClient(t, s, "u-alice", dispatch.RoleRider)
	riderDriverAt(t, s, "d-1", riderNearby)
	ride, err := alice.RequestRide(ctx, riderTrip, "")
	if err != nil {
		t.Fatal(err)
	}
	offer := riderOfferTo(t, s, "d-1", ride.ID)
	got, err := alice.Cancel(ctx, ride.ID)
	if err != nil || got.Status != dispatch.RideCancelled {
		t.Fatalf("cancel = %+v, %v", got, err)
	}
	if d := riderDriverState(t, s, "d-1"); d.State != dispatch.DriverAvailable || d.OfferID != "" || d.RideID != "" {
		t.Fatalf("d-1 after the rider cancelled: %+v, want available with no offer", d)
	}
	if _, err := s.engine.Drivers().Accept(ctx, "d-1", offer); dispatch.ErrorCode(err) != dispatch.ECodeConflict {
		t.Fatalf("accepting the revoked offer: %v, want a conflict", err)
	}
	// Back in the supply: the next ride is offered to d-1.
	next, err := riderClient(t, s, "u-bob", dispatch.RoleRider).RequestRide(ctx, riderTrip, "")
	if err != nil {
		t.Fatal(err)
	}
	riderOfferTo(t, s, "d-1", next.ID)
}

func TestRiderNoDriverAfterMaxSearch(t *testing.T) {
	s := mustServe(t, "--match-interval", "0", "--max-search", "300ms")
	ctx := riderCtx(t)
	alice := riderClient(t, s, "u-alice", dispatch.RoleRider)
	start := time.Now()
	ride, err := alice.RequestRide(ctx, riderTrip, "")
	if err != nil {
		t.Fatal(err)
	}
	st, err := alice.Follow(ctx, ride.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if first := riderNext(t, st); first.Status != dispatch.RideSearching {
		t.Fatalf("first event %s", first.Status)
	}
	if last := riderNext(t, st); last.Status != dispatch.RideNoDriver {
		t.Fatalf("event %s, want no_driver", last.Status)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("no_driver after %s, before the 300 ms search", took)
	}
	if _, ok := <-st.C; ok || st.Err() != nil {
		t.Fatalf("stream after no_driver: open %v, err %v", ok, st.Err())
	}
	dispatchtest.Eventually(t, func() error {
		r, err := alice.Ride(ctx, ride.ID)
		if err == nil && r.Status != dispatch.RideNoDriver {
			err = fmt.Errorf("GET shows %s after the stream's no_driver", r.Status)
		}
		return err
	})
	if _, err := alice.Cancel(ctx, ride.ID); riderclient.Code(err) != "conflict" {
		t.Fatalf("cancel after no_driver: %v, want conflict", err)
	}
}

// riderPost sends POST /v1/rides with body and key as token's rider; status 0 is a
// transport error, told in the problem's detail.
func riderPost(tb testing.TB, s *server, token, key, body string) (int, rider.Ride, problem.Details) {
	tb.Helper()
	req, _ := http.NewRequest("POST", "http://"+s.Addr()+"/v1/rides", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set(rider.IdempotencyKeyHeader, key)
	}
	resp, err := riderHTTP(tb, s).Do(req)
	if err != nil { // no Fatal: concurrent callers run on their own goroutines
		return 0, rider.Ride{}, problem.Details{Detail: err.Error()}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var (
		r rider.Ride
		p problem.Details
	)
	if resp.StatusCode == http.StatusCreated {
		_ = json.Unmarshal(b, &r)
	} else {
		_ = json.Unmarshal(b, &p)
	}
	return resp.StatusCode, r, p
}

func TestRiderIdempotencyEndToEnd(t *testing.T) {
	s := mustServe(t, "--match-interval", "0")
	tok, _ := s.keys.Sign(dispatch.Identity{Subject: "u-alice", Role: dispatch.RoleRider}, time.Hour)
	body := `{"pickup":{"lat":37.5665,"lng":126.978},"dropoff":{"lat":37.5512,"lng":126.9882}}`

	code, first, _ := riderPost(t, s, tok, "k-1", body)
	if code != 201 {
		t.Fatalf("first = %d", code)
	}
	code, replay, _ := riderPost(t, s, tok, "k-1", body)
	if code != 201 || replay.ID != first.ID {
		t.Fatalf("replay = %d %s, want 201 %s", code, replay.ID, first.ID)
	}
	code, _, p := riderPost(t, s, tok, "k-1", strings.Replace(body, "37.5512", "37.5", 1))
	if code != 422 || p.Code != "idempotency_conflict" {
		t.Fatalf("another body with the key = %d %q, want 422 idempotency_conflict", code, p.Code)
	}

	// Concurrent duplicates: one ride per key, over a few rounds to widen the race
	// (a rider per round, to stay within each rider's burst).
	const rounds, n = 4, 16
	for round := range rounds {
		key := fmt.Sprintf("k-dup-%d", round)
		bob, _ := s.keys.Sign(dispatch.Identity{Subject: fmt.Sprintf("u-bob-%d", round), Role: dispatch.RoleRider}, time.Hour)
		var (
			wg  sync.WaitGroup
			mu  sync.Mutex
			ids = map[string]int{}
		)
		start := make(chan struct{})
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				code, r, p := riderPost(t, s, bob, key, body)
				mu.Lock()
				defer mu.Unlock()
				if code != 201 {
					t.Errorf("a duplicate answered %d %s %s", code, p.Code, p.Detail)
					return
				}
				ids[r.ID]++
			}()
		}
		close(start)
		wg.Wait()
		if len(ids) != 1 {
			t.Fatalf("%d concurrent duplicates with key %s created rides %v, want one", n, key, ids)
		}
	}
	rides := 0
	err := s.store.ActiveRides(context.Background(), func(r dispatch.Ride) error {
		if strings.HasPrefix(r.RiderID, "u-bob-") {
			rides++
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read the active rides: %v", err)
	}
	if rides != rounds {
		t.Fatalf("the bobs have %d rides in the store, want %d (one per key)", rides, rounds)
	}
}

func TestRiderEventsResumeWithLastEventID(t *testing.T) {
	s := mustServe(t, "--match-interval", "0")
	ctx := riderCtx(t)
	alice := riderClient(t, s, "u-alice", dispatch.RoleRider)
	riderDriverAt(t, s, "d-1", riderNearby)
	ride, err := alice.RequestRide(ctx, riderTrip, "")
	if err != nil {
		t.Fatal(err)
	}
	// A first connection sees searching, then goes away.
	fctx, stop := context.WithCancel(ctx)
	st, err := alice.Follow(fctx, ride.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	riderNext(t, st)
	stop()
	for range st.C {
	}
	seen := st.LastEventID()
	if seen == 0 {
		t.Fatal("no event id")
	}
	// Meanwhile the driver accepts and arrives.
	offer := riderOfferTo(t, s, "d-1", ride.ID)
	if _, err := s.engine.Drivers().Accept(ctx, "d-1", offer); err != nil {
		t.Fatal(err)
	}
	arrived, err := s.engine.Drivers().Arrived(ctx, "d-1", ride.ID)
	if err != nil {
		t.Fatal(err)
	}
	// Resuming skips what was missed to the current state, then follows.
	st, err = alice.Follow(ctx, ride.ID, seen)
	if err != nil {
		t.Fatal(err)
	}
	if got := riderNext(t, st); got.Status != dispatch.RideArrived {
		t.Fatalf("first event after resuming: %s, want arrived (the current state)", got.Status)
	}
	if _, err := s.engine.Drivers().Start(ctx, "d-1", ride.ID); err != nil {
		t.Fatal(err)
	}
	if got := riderNext(t, st); got.Status != dispatch.RideInProgress {
		t.Fatalf("next event: %s, want in_progress", got.Status)
	}
	if _, err := s.engine.Drivers().Complete(ctx, "d-1", ride.ID); err != nil { // a trip in progress is its driver's to end
		t.Fatal(err)
	}
	if got := riderNext(t, st); got.Status != dispatch.RideCompleted {
		t.Fatalf("last event: %s, want completed", got.Status)
	}
	if st.Err() != nil || st.LastEventID() <= arrived.Version {
		t.Fatalf("stream ended with %v at id %d", st.Err(), st.LastEventID())
	}
}

func TestRiderStreamsEndAtShutdown(t *testing.T) {
	s := mustServe(t, "--match-interval", "0")
	ctx := riderCtx(t)
	alice := riderClient(t, s, "u-alice", dispatch.RoleRider)
	ride, err := alice.RequestRide(ctx, riderTrip, "")
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+s.Addr()+"/v1/rides/"+ride.ID+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+alice.Token)
	resp, err := riderHTTP(t, s).Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("events: %v %v", resp, err)
	}
	defer resp.Body.Close()
	ended := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, resp.Body)
		ended <- err
	}()
	if err := s.riderAPI.Drain(ctx); err != nil {
		t.Fatalf("drain: %v", err)
	}
	select {
	case err := <-ended:
		if err != nil {
			t.Fatalf("stream ended with %v, want a clean end", err)
		}
	case <-time.After(riderWait):
		t.Fatal("the stream outlived the drain")
	}
	if _, err := alice.Follow(ctx, ride.ID, 0); riderclient.Code(err) != "unavailable" {
		t.Fatalf("a new stream after the drain: %v, want unavailable", err)
	}
}

func TestRiderBadRequestsEndToEnd(t *testing.T) {
	s := mustServe(t, "--match-interval", "0")
	sign := func(sub string, role dispatch.Role) string {
		tok, _ := s.keys.Sign(dispatch.Identity{Subject: sub, Role: role}, time.Hour)
		return tok
	}
	alice, bob := sign("u-alice", dispatch.RoleRider), sign("u-bob", dispatch.RoleRider)
	forged, _ := (&jwtauth.Keys{Secret: []byte("some-other-secret-entirely")}).Sign(dispatch.Identity{Subject: "u-alice", Role: dispatch.RoleRider}, time.Hour)
	ride, err := riderClient(t, s, "u-alice", dispatch.RoleRider).RequestRide(riderCtx(t), riderTrip, "")
	if err != nil {
		t.Fatal(err)
	}
	pt := `{"lat":37.5,"lng":127}`
	for _, c := range []struct {
		name, method, path, token, body string
		status                          int
		code                            string
	}{
		{"malformed JSON", "POST", "/v1/rides", alice, `{"pickup":{`, 400, "invalid"},
		{"coordinates out of range", "POST", "/v1/rides", alice, `{"pickup":{"lat":91,"lng":0},"dropoff":` + pt + `}`, 400, "invalid"},
		{"missing field", "POST", "/v1/rides", alice, `{"pickup":` + pt + `}`, 400, "invalid"},
		{"wrong type", "POST", "/v1/estimates", alice, `{"pickup":{"lat":"north","lng":0},"dropoff":` + pt + `}`, 400, "invalid"},
		{"unknown field", "POST", "/v1/rides", alice, `{"pickup":` + pt + `,"dropoff":` + pt + `,"vip":true}`, 400, "invalid"},
		{"no token", "GET", "/v1/rides/" + ride.ID, "", ``, 401, "unauthorized"},
		{"forged token", "GET", "/v1/rides/" + ride.ID, forged, ``, 401, "unauthorized"},
		{"driver role", "POST", "/v1/rides", sign("d-1", dispatch.RoleDriver), riderBody(pt), 403, "forbidden"},
		{"unknown ride", "GET", "/v1/rides/r_unknown", alice, ``, 404, "not_found"},
		{"another rider's ride", "GET", "/v1/rides/" + ride.ID, bob, ``, 404, "not_found"},
		{"another rider's cancel", "POST", "/v1/rides/" + ride.ID + "/cancel", bob, ``, 404, "not_found"},
		{"oversized body", "POST", "/v1/rides", alice, `{"pickup":` + pt + `,"dropoff":` + pt + strings.Repeat(" ", 17<<10) + `}`, 413, "too_large"},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, ct, p, _ := riderCall(t, s, c.method, c.path, c.token, c.body)
			if status != c.status || p.Code != c.code || ct != "application/problem+json" {
				t.Fatalf("%s %s = %d %s (%s), want %d %s", c.method, c.path, status, p.Code, ct, c.status, c.code)
			}
		})
	}
	t.Run("flood", func(t *testing.T) {
		flooder := sign("u-flood", dispatch.RoleRider)
		for i := range 200 {
			status, _, p, hdr := riderCall(t, s, "POST", "/v1/estimates", flooder, riderBody(pt))
			if status == 429 {
				if p.Code != "rate_limited" || hdr.Get("Retry-After") == "" {
					t.Fatalf("429 %q without Retry-After", p.Code)
				}
				if i < rider.DefaultConfig().Burst {
					t.Fatalf("limited after %d requests, within the burst", i)
				}
				return
			}
		}
		t.Fatal("200 requests at once were never rate limited")
	})
}

func riderBody(pt string) string { return `{"pickup":` + pt + `,"dropoff":` + pt + `}` }

func riderCall(tb testing.TB, s *server, method, path, token, body string) (int, string, problem.Details, http.Header) {
	tb.Helper()
	req, _ := http.NewRequest(method, "http://"+s.Addr()+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := riderHTTP(tb, s).Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var p problem.Details
	_ = json.NewDecoder(resp.Body).Decode(&p)
	return resp.StatusCode, resp.Header.Get("Content-Type"), p, resp.Header
}

func TestRiderMetricsAreServed(t *testing.T) {
	s := mustServe(t, "--match-interval", "0")
	ctx := riderCtx(t)
	alice := riderClient(t, s, "u-alice", dispatch.RoleRider)
	ride, err := alice.RequestRide(ctx, riderTrip, "")
	if err != nil {
		t.Fatal(err)
	}
	st, err := alice.Follow(ctx, ride.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	riderNext(t, st)
	code, body := get(t, "http://"+s.Addr()+"/metrics")
	for _, want := range []string{
		`understudy_rider_requests_total{route="POST /v1/rides",status="201"} 1`,
		`understudy_rider_request_duration_seconds_count{route="POST /v1/rides"} 1`,
		"understudy_rider_sse_subscribers 1",
	} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if _, err := alice.Cancel(ctx, ride.ID); err != nil {
		t.Fatal(err)
	}
	for range st.C {
	}
	dispatchtest.Eventually(t, func() error {
		_, body := get(t, "http://"+s.Addr()+"/metrics")
		if !strings.Contains(body, "understudy_rider_sse_subscribers 0") {
			return errors.New("/metrics lacks understudy_rider_sse_subscribers 0 after the stream ended")
		}
		return nil
	})
}
