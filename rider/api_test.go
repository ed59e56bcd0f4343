package rider_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
	"github.com/understudy/understudy/dispatch/jwtauth"
	"github.com/understudy/understudy/dispatch/memstore"
	"github.com/understudy/understudy/dispatch/problem"
	"github.com/understudy/understudy/rider"
)

func TestBadRequestsAnswerProblems(t *testing.T) {
	e := mustOpenAPI(t, func(e *env) { e.api.Config.Burst = 1000 }) // the flood has its own test
	alice := e.token("u-alice", dispatch.RoleRider)
	bob := e.token("u-bob", dispatch.RoleRider)
	ride := e.mustRequest(alice)
	forged, _ := (&jwtauth.Keys{Secret: []byte("not-the-region-secret-at-all!!")}).Sign(dispatch.Identity{Subject: "u-alice", Role: dispatch.RoleRider}, time.Hour)
	expired, _ := (&jwtauth.Keys{Secret: e.keys.Secret, Now: func() time.Time { return time.Now().Add(-2 * time.Hour) }}).
		Sign(dispatch.Identity{Subject: "u-alice", Role: dispatch.RoleRider}, time.Hour)
	point := `{"lat":37.5,"lng":127}`
	body := func(p, d string) string { return `{"pickup":` + p + `,"dropoff":` + d + `}` }

	for _, c := range []struct {
		name, method, path, token, body string
		hdr                             []string
		status                          int
		code                            dispatch.ECode
	}{
		{"malformed JSON", "POST", "/v1/rides", alice, `{"pickup":`, nil, 400, dispatch.ECodeInvalid},
		{"not JSON", "POST", "/v1/rides", alice, `pickup=1`, nil, 400, dispatch.ECodeInvalid},
		{"empty body", "POST", "/v1/rides", alice, ``, nil, 400, dispatch.ECodeInvalid},
		{"array body", "POST", "/v1/rides", alice, `[1,2]`, nil, 400, dispatch.ECodeInvalid},
		{"trailing data", "POST", "/v1/rides", alice, seoulTrip + `{}`, nil, 400, dispatch.ECodeInvalid},
		{"unknown field", "POST", "/v1/rides", alice, `{"pickup":` + point + `,"dropoff":` + point + `,"tip":5}`, nil, 400, dispatch.ECodeInvalid},
		{"unknown point field", "POST", "/v1/rides", alice, body(`{"lat":1,"lng":2,"alt":3}`, point), nil, 400, dispatch.ECodeInvalid},
		{"field name in another case", "POST", "/v1/rides", alice, `{"Pickup":` + point + `,"dropoff":` + point + `}`, nil, 400, dispatch.ECodeInvalid},
		{"duplicate field", "POST", "/v1/rides", alice, `{"pickup":` + point + `,"pickup":` + point + `,"dropoff":` + point + `}`, nil, 400, dispatch.ECodeInvalid},
		{"missing pickup", "POST", "/v1/rides", alice, `{"dropoff":` + point + `}`, nil, 400, dispatch.ECodeInvalid},
		{"missing dropoff", "POST", "/v1/rides", alice, `{"pickup":` + point + `}`, nil, 400, dispatch.ECodeInvalid},
		{"missing lng", "POST", "/v1/rides", alice, body(`{"lat":1}`, point), nil, 400, dispatch.ECodeInvalid},
		{"null pickup", "POST", "/v1/rides", alice, body(`null`, point), nil, 400, dispatch.ECodeInvalid},
		{"null lat", "POST", "/v1/rides", alice, body(`{"lat":null,"lng":2}`, point), nil, 400, dispatch.ECodeInvalid},
		{"lat as string", "POST", "/v1/rides", alice, body(`{"lat":"37.5","lng":127}`, point), nil, 400, dispatch.ECodeInvalid},
		{"lat as bool", "POST", "/v1/rides", alice, body(`{"lat":true,"lng":127}`, point), nil, 400, dispatch.ECodeInvalid},
		{"point as array", "POST", "/v1/rides", alice, body(`[37.5,127]`, point), nil, 400, dispatch.ECodeInvalid},
		{"latitude out of range", "POST", "/v1/rides", alice, body(`{"lat":90.0001,"lng":127}`, point), nil, 400, dispatch.ECodeInvalid},
		{"longitude out of range", "POST", "/v1/rides", alice, body(point, `{"lat":0,"lng":-180.5}`), nil, 400, dispatch.ECodeInvalid},
		{"number overflows float64", "POST", "/v1/rides", alice, body(`{"lat":1e400,"lng":0}`, point), nil, 400, dispatch.ECodeInvalid},
		{"estimate out of range", "POST", "/v1/estimates", alice, body(point, `{"lat":-91,"lng":0}`), nil, 400, dispatch.ECodeInvalid},
		{"oversized body", "POST", "/v1/rides", alice, `{"pickup":` + strings.Repeat(" ", 20<<10) + point + `}`, nil, 413, dispatch.ECodeTooLarge},
		{"oversized estimate", "POST", "/v1/estimates", alice, strings.Repeat("[", 17<<10), nil, 413, dispatch.ECodeTooLarge},
		{"form body", "POST", "/v1/rides", alice, seoulTrip, []string{"Content-Type", "application/x-www-form-urlencoded"}, 415, dispatch.ECodeMediaType},
		{"body without a type", "POST", "/v1/estimates", alice, seoulTrip, []string{"Content-Type", ""}, 415, dispatch.ECodeMediaType},
		{"body in another charset", "POST", "/v1/rides", alice, seoulTrip, []string{"Content-Type", "application/json; charset=latin1"}, 415, dispatch.ECodeMediaType},
		{"gzipped body", "POST", "/v1/rides", alice, seoulTrip, []string{"Content-Encoding", "gzip"}, 415, dispatch.ECodeMediaType},
		{"unknown path", "GET", "/v1/ride", alice, ``, nil, 404, dispatch.ECodeNotFound},
		{"unknown method", "DELETE", "/v1/rides/" + ride.ID, alice, ``, nil, 405, dispatch.ECodeMethod},
		{"empty idempotency key", "POST", "/v1/rides", alice, seoulTrip, []string{"Idempotency-Key", ""}, 400, dispatch.ECodeInvalid},
		{"idempotency key with spaces", "POST", "/v1/rides", alice, seoulTrip, []string{"Idempotency-Key", "a b"}, 400, dispatch.ECodeInvalid},
		{"idempotency key too long", "POST", "/v1/rides", alice, seoulTrip, []string{"Idempotency-Key", strings.Repeat("k", 256)}, 400, dispatch.ECodeInvalid},
		{"two idempotency keys", "POST", "/v1/rides", alice, seoulTrip, []string{"Idempotency-Key", "a", "Idempotency-Key", "b"}, 400, dispatch.ECodeInvalid},
		{"bad Last-Event-ID", "GET", "/v1/rides/" + ride.ID + "/events", alice, ``, []string{"Last-Event-ID", "abc"}, 400, dispatch.ECodeInvalid},
		{"no token", "POST", "/v1/rides", "", seoulTrip, nil, 401, dispatch.ECodeUnauthorized},
		{"no token on a ride", "GET", "/v1/rides/" + ride.ID, "", ``, nil, 401, dispatch.ECodeUnauthorized},
		{"forged token", "GET", "/v1/rides/" + ride.ID, forged, ``, nil, 401, dispatch.ECodeUnauthorized},
		{"expired token", "GET", "/v1/rides/" + ride.ID, expired, ``, nil, 401, dispatch.ECodeUnauthorized},
		{"garbage token", "POST", "/v1/estimates", "not.a.jwt", seoulTrip, nil, 401, dispatch.ECodeUnauthorized},
		{"driver requests a ride", "POST", "/v1/rides", e.token("d-1", dispatch.RoleDriver), seoulTrip, nil, 403, dispatch.ECodeForbidden},
		{"driver reads a ride", "GET", "/v1/rides/" + ride.ID, e.token("d-1", dispatch.RoleDriver), ``, nil, 403, dispatch.ECodeForbidden},
		{"unknown ride", "GET", "/v1/rides/r_nosuchride", alice, ``, nil, 404, dispatch.ECodeNotFound},
		{"very long ride id", "GET", "/v1/rides/" + strings.Repeat("r", 4000), alice, ``, nil, 404, dispatch.ECodeNotFound},
		{"unknown ride cancel", "POST", "/v1/rides/r_nosuchride/cancel", alice, ``, nil, 404, dispatch.ECodeNotFound},
		{"another rider's ride", "GET", "/v1/rides/" + ride.ID, bob, ``, nil, 404, dispatch.ECodeNotFound},
		{"another rider's cancel", "POST", "/v1/rides/" + ride.ID + "/cancel", bob, ``, nil, 404, dispatch.ECodeNotFound},
		{"another rider's events", "GET", "/v1/rides/" + ride.ID + "/events", bob, ``, nil, 404, dispatch.ECodeNotFound},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, b := e.do(c.method, c.path, c.token, c.body, c.hdr...)
			checkProblem(t, resp, b, c.status, c.code)
		})
	}
	// Bob was not allowed to cancel: Alice's ride is still searching.
	if got, _ := e.engine.Riders().Ride(context.Background(), ride.ID); got.Status != dispatch.RideSearching {
		t.Fatalf("alice's ride is %s after the refused requests", got.Status)
	}
}

// TestProblemsQuoteMultibyteInputWhole: a client's value quoted back in a problem is
// cut at a character boundary, so the detail is valid UTF-8 with whole characters.
func TestProblemsQuoteMultibyteInputWhole(t *testing.T) {
	e := mustOpenAPI(t)
	alice := e.token("u-alice", dispatch.RoleRider)
	for _, hdr := range [][]string{
		{"Content-Type", "text/" + strings.Repeat("드", 30)},
		{"Content-Type", "application/json; charset=" + strings.Repeat("é", 40)},
	} {
		resp, b := e.do("POST", "/v1/rides", alice, seoulTrip, hdr...)
		p := checkProblem(t, resp, b, 415, dispatch.ECodeMediaType)
		if !utf8.ValidString(p.Detail) || strings.Contains(p.Detail, `\x`) || strings.ContainsRune(p.Detail, utf8.RuneError) ||
			!strings.Contains(p.Detail, "…") {
			t.Errorf("%s %.20s…: detail %q, want the value cut between characters, ending in …", hdr[0], hdr[1], p.Detail)
		}
	}
}

func checkProblem(tb testing.TB, resp *http.Response, b []byte, status int, code dispatch.ECode) problem.Details {
	tb.Helper()
	if resp.StatusCode != status {
		tb.Fatalf("status %d, want %d: %s", resp.StatusCode, status, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		tb.Fatalf("Content-Type %q, want application/problem+json", ct)
	}
	p := decode[problem.Details](tb, b)
	if p.Code != string(code) || p.Status != status || p.Title == "" || p.Detail == "" {
		tb.Fatalf("problem %+v, want code %s and status %d", p, code, status)
	}
	if status == 401 && resp.Header.Get("WWW-Authenticate") == "" {
		tb.Fatal("401 without WWW-Authenticate")
	}
	return p
}

func TestFloodIsRateLimitedPerRiderAndRefillsOnTheClock(t *testing.T) {
	e := mustOpenAPI(t, func(e *env) { e.api.Config.Rate, e.api.Config.Burst = 0.5, 3 })
	alice := e.token("u-alice", dispatch.RoleRider)
	bob := e.token("u-bob", dispatch.RoleRider)
	for i := range 3 {
		if resp, b := e.do("POST", "/v1/estimates", alice, seoulTrip); resp.StatusCode != 200 {
			t.Fatalf("request %d within the burst: %d %s", i, resp.StatusCode, b)
		}
	}
	for range 20 {
		resp, b := e.do("POST", "/v1/estimates", alice, seoulTrip)
		checkProblem(t, resp, b, 429, dispatch.ECodeRateLimited)
		if ra := resp.Header.Get("Retry-After"); ra != "2" {
			t.Fatalf("Retry-After %q, want 2 (one token per 2 s)", ra)
		}
	}
	if resp, b := e.do("POST", "/v1/estimates", bob, seoulTrip); resp.StatusCode != 200 {
		t.Fatalf("bob is limited by alice's flood: %d %s", resp.StatusCode, b)
	}
	e.clock.Advance(2 * time.Second)
	if resp, b := e.do("POST", "/v1/estimates", alice, seoulTrip); resp.StatusCode != 200 {
		t.Fatalf("after 2 s: %d %s", resp.StatusCode, b)
	}
}

func TestRequestRideAnswersTheContractShape(t *testing.T) {
	e := mustOpenAPI(t)
	resp, b := e.do("POST", "/v1/rides", e.token("u-alice", dispatch.RoleRider), seoulTrip)
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("POST /v1/rides = %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"id", "rider_id", "status", "pickup", "dropoff", "driver", "fare", "created_at", "updated_at"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("ride JSON lacks %q: %s", k, b)
		}
	}
	if string(raw["driver"]) != "null" {
		t.Errorf("driver = %s, want null while searching", raw["driver"])
	}
	r := decode[rider.Ride](t, b)
	if r.RiderID != "u-alice" || r.Status != dispatch.RideSearching || r.Pickup != cityHall ||
		r.Fare.Currency != "KRW" || r.Fare.Amount <= 0 || r.CreatedAt.IsZero() || r.CreatedAt.Location() != time.UTC {
		t.Fatalf("ride = %+v", r)
	}
	var created string
	_ = json.Unmarshal(raw["created_at"], &created)
	if _, err := time.Parse(time.RFC3339, created); err != nil {
		t.Fatalf("created_at %q is not RFC 3339: %v", created, err)
	}
	if loc := resp.Header.Get("Location"); loc != "/v1/rides/"+r.ID {
		t.Fatalf("Location %q", loc)
	}
	resp, b = e.do("GET", "/v1/rides/"+r.ID, e.token("u-alice", dispatch.RoleRider), "")
	if got := decode[rider.Ride](t, b); resp.StatusCode != 200 || got.ID != r.ID || got.Status != dispatch.RideSearching {
		t.Fatalf("GET = %d %s", resp.StatusCode, b)
	}
	resp, b = e.do("GET", "/v1/rides/"+r.ID, e.token("ops", dispatch.RoleAdmin), "")
	if resp.StatusCode != 200 || decode[rider.Ride](t, b).ID != r.ID {
		t.Fatalf("admin GET = %d %s", resp.StatusCode, b)
	}
}

func TestRideShowsItsDriverWhileActive(t *testing.T) {
	e := mustOpenAPI(t)
	ctx := context.Background()
	alice := e.token("u-alice", dispatch.RoleRider)
	e.driverAt("d-1", dispatch.Point{Lat: 37.567, Lng: 126.979})
	r := e.mustRequest(alice)
	if err := e.engine.Step(ctx); err != nil {
		t.Fatal(err)
	}
	d, _ := e.engine.Riders().Driver(ctx, "d-1")
	if _, err := e.engine.Drivers().Accept(ctx, "d-1", d.OfferID); err != nil {
		t.Fatalf("accept: %v", err)
	}
	_, b := e.do("GET", "/v1/rides/"+r.ID, alice, "")
	got := decode[rider.Ride](t, b)
	if got.Status != dispatch.RideMatched || got.Driver == nil || got.Driver.ID != "d-1" ||
		got.Driver.Location == nil || *got.Driver.Location != (dispatch.Point{Lat: 37.567, Lng: 126.979}) {
		t.Fatalf("matched ride = %s", b)
	}
	resp, b := e.do("POST", "/v1/rides/"+r.ID+"/cancel", alice, "")
	got = decode[rider.Ride](t, b)
	if resp.StatusCode != 200 || got.Status != dispatch.RideCancelled || got.Driver == nil || got.Driver.Location != nil {
		t.Fatalf("cancelled ride = %d %s (driver kept, location hidden once ended)", resp.StatusCode, b)
	}
	resp, b = e.do("POST", "/v1/rides/"+r.ID+"/cancel", alice, "")
	if resp.StatusCode != 200 || decode[rider.Ride](t, b).Status != dispatch.RideCancelled {
		t.Fatalf("second cancel = %d %s, want the cancelled ride again", resp.StatusCode, b)
	}
}

func TestEstimateQuotesWithoutCreating(t *testing.T) {
	e := mustOpenAPI(t)
	alice := e.token("u-alice", dispatch.RoleRider)
	resp, b := e.do("POST", "/v1/estimates", alice, seoulTrip)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"pickup_eta_s":null`) {
		t.Fatalf("estimate without drivers = %d %s, want pickup_eta_s null", resp.StatusCode, b)
	}
	est := decode[rider.Estimate](t, b)
	if est.Fare.Amount <= 0 || est.Fare.Currency != "KRW" || est.DistanceM <= 0 {
		t.Fatalf("estimate %+v", est)
	}
	e.driverAt("d-1", dispatch.Point{Lat: 37.57, Lng: 126.98})
	_, b = e.do("POST", "/v1/estimates", alice, seoulTrip)
	if est := decode[rider.Estimate](t, b); est.PickupETAS == nil || *est.PickupETAS <= 0 {
		t.Fatalf("estimate with a driver near = %s", b)
	}
	if e.engine.Pending() != 0 {
		t.Fatal("an estimate created a ride")
	}
}

func TestIdempotentReplayAnswersTheCurrentRide(t *testing.T) {
	e := mustOpenAPI(t)
	alice := e.token("u-alice", dispatch.RoleRider)
	first := e.mustRequest(alice, "Idempotency-Key", "trip-1")
	// The same request, written differently: members reordered, spacing, -0.
	same := ` { "dropoff" : {"lng":126.9882,"lat":37.5512}, "pickup":{"lng":126.978,"lat":37.5665} } `
	resp, b := e.do("POST", "/v1/rides", alice, same, "Idempotency-Key", "trip-1")
	replay := decode[rider.Ride](t, b)
	if resp.StatusCode != 201 || replay.ID != first.ID || resp.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay = %d %s (replayed %q), want 201 with ride %s", resp.StatusCode, b, resp.Header.Get("Idempotent-Replayed"), first.ID)
	}
	if _, b := e.do("POST", "/v1/rides/"+first.ID+"/cancel", alice, ""); decode[rider.Ride](t, b).Status != dispatch.RideCancelled {
		t.Fatalf("cancel: %s", b)
	}
	_, b = e.do("POST", "/v1/rides", alice, seoulTrip, "Idempotency-Key", "trip-1")
	if got := decode[rider.Ride](t, b); got.ID != first.ID || got.Status != dispatch.RideCancelled {
		t.Fatalf("replay after cancel = %s, want the ride as it is now (cancelled)", b)
	}

	other := `{"pickup":{"lat":37.5665,"lng":126.978},"dropoff":{"lat":37.5,"lng":127.0}}`
	resp, b = e.do("POST", "/v1/rides", alice, other, "Idempotency-Key", "trip-1")
	checkProblem(t, resp, b, 422, dispatch.ECodeIdempotency)

	// Keys are the rider's own: Bob's trip-1 is another ride.
	bobs := e.mustRequest(e.token("u-bob", dispatch.RoleRider), "Idempotency-Key", "trip-1")
	if bobs.ID == first.ID || bobs.RiderID != "u-bob" {
		t.Fatalf("bob's trip-1 = %+v", bobs)
	}
	// After the TTL the key is free again.
	e.clock.Advance(24 * time.Hour)
	if again := e.mustRequest(alice, "Idempotency-Key", "trip-1"); again.ID == first.ID {
		t.Fatal("the key still replays after 24 h")
	}
}

// gatedEngine wraps the real engine to hold, fail or panic on demand.
type gatedEngine struct {
	rider.Engine
	requests atomic.Int32
	gate     chan struct{} // RequestRide waits for it to close, when not nil
	opened   sync.Once
	fail     atomic.Pointer[error]
	panics   atomic.Bool // Estimate panics
}

func (g *gatedEngine) RequestRide(ctx context.Context, riderID string, pickup, dropoff dispatch.Point) (dispatch.Ride, error) {
	g.requests.Add(1)
	if g.gate != nil {
		select {
		case <-g.gate:
		case <-time.After(dispatchtest.Patience): // a test that went wrong fails rather than hangs
			return dispatch.Ride{}, fmt.Errorf("gatedEngine: held for %s", dispatchtest.Patience)
		}
	}
	if err := g.fail.Load(); err != nil {
		return dispatch.Ride{}, *err
	}
	return g.Engine.RequestRide(ctx, riderID, pickup, dropoff)
}

func (g *gatedEngine) Estimate(pickup, dropoff dispatch.Point) (dispatch.Estimate, error) {
	if g.panics.Load() {
		var m map[string]int
		m["boom"]++ // a nil map write: a real runtime panic
	}
	return g.Engine.Estimate(pickup, dropoff)
}

// open lets every held RequestRide through.
func (g *gatedEngine) open() { g.opened.Do(func() { close(g.gate) }) }

func withGate(g *gatedEngine) func(*env) {
	return func(e *env) {
		g.Engine = e.engine.Riders()
		e.api.Engine = g
	}
}

func TestConcurrentDuplicatesWaitForTheFirstAndGetItsRide(t *testing.T) {
	g := &gatedEngine{gate: make(chan struct{})}
	e := mustOpenAPI(t, withGate(g))
	t.Cleanup(g.open) // before the server closes, should the test fail midway
	alice := e.token("u-alice", dispatch.RoleRider)
	const n = 12
	type answer struct {
		status int
		ride   rider.Ride
	}
	answers := make(chan answer, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, b := e.do("POST", "/v1/rides", alice, seoulTrip, "Idempotency-Key", "dup")
			var r rider.Ride
			_ = json.Unmarshal(b, &r)
			answers <- answer{resp.StatusCode, r}
		}()
	}
	dispatchtest.Eventually(t, func() error {
		rec, err := e.idem.Lookup(context.Background(), "u-alice", "dup")
		if err != nil || rec.Done() {
			return fmt.Errorf("key dup = %+v, %v; want reserved by the first request, not done", rec, err)
		}
		return nil
	})
	g.open()
	wg.Wait()
	close(answers)
	ids := map[string]int{}
	for a := range answers {
		if a.status != 201 {
			t.Fatalf("a duplicate answered %d", a.status)
		}
		ids[a.ride.ID]++
	}
	if len(ids) != 1 || g.requests.Load() != 1 {
		t.Fatalf("rides %v from %d engine requests, want one ride from one request", ids, g.requests.Load())
	}
}

func TestDuplicateOfASlowRequestAnswers409(t *testing.T) {
	g := &gatedEngine{gate: make(chan struct{})}
	e := mustOpenAPI(t, withGate(g), func(e *env) { e.api.Config.InFlightWait = 30 * time.Millisecond })
	t.Cleanup(g.open)
	alice := e.token("u-alice", dispatch.RoleRider)
	first := make(chan int, 1)
	go func() {
		resp, _ := e.do("POST", "/v1/rides", alice, seoulTrip, "Idempotency-Key", "slow")
		first <- resp.StatusCode
	}()
	dispatchtest.Eventually(t, func() error {
		if n := g.requests.Load(); n != 1 {
			return fmt.Errorf("%d requests reached the engine, want the first one", n)
		}
		return nil
	})
	resp, b := e.do("POST", "/v1/rides", alice, seoulTrip, "Idempotency-Key", "slow")
	checkProblem(t, resp, b, 409, dispatch.ECodeConflict)
	if resp.Header.Get("Retry-After") == "" {
		t.Fatal("409 for a request in flight without Retry-After")
	}
	g.open()
	if s := <-first; s != 201 {
		t.Fatalf("first request = %d", s)
	}
	if resp, b := e.do("POST", "/v1/rides", alice, seoulTrip, "Idempotency-Key", "slow"); resp.StatusCode != 201 || resp.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry after the first finished = %d %s", resp.StatusCode, b)
	}
	if g.requests.Load() != 1 {
		t.Fatalf("%d rides requested from the engine", g.requests.Load())
	}
}

func TestFailedRequestFreesItsKey(t *testing.T) {
	g := &gatedEngine{}
	e := mustOpenAPI(t, withGate(g))
	alice := e.token("u-alice", dispatch.RoleRider)
	down := error(dispatch.ErrClosed)
	g.fail.Store(&down)
	resp, b := e.do("POST", "/v1/rides", alice, seoulTrip, "Idempotency-Key", "k")
	checkProblem(t, resp, b, 503, dispatch.ECodeUnavailable)
	g.fail.Store(nil)
	if r := e.mustRequest(alice, "Idempotency-Key", "k"); r.Status != dispatch.RideSearching {
		t.Fatalf("retry = %+v", r)
	}
	internal := errors.New("disk on fire")
	g.fail.Store(&internal)
	resp, b = e.do("POST", "/v1/rides", alice, seoulTrip, "Idempotency-Key", "k2")
	if p := checkProblem(t, resp, b, 500, dispatch.ECodeInternal); strings.Contains(p.Detail, "disk") {
		t.Fatalf("internal detail leaked: %+v", p)
	}
}

func TestPanicAnswers500AndTheServerLivesOn(t *testing.T) {
	g := &gatedEngine{}
	e := mustOpenAPI(t, withGate(g))
	alice := e.token("u-alice", dispatch.RoleRider)
	g.panics.Store(true)
	resp, b := e.do("POST", "/v1/estimates", alice, seoulTrip)
	checkProblem(t, resp, b, 500, dispatch.ECodeInternal)
	g.panics.Store(false)
	if resp, b := e.do("POST", "/v1/estimates", alice, seoulTrip); resp.StatusCode != 200 {
		t.Fatalf("after the panic: %d %s", resp.StatusCode, b)
	}
}

func TestMetricsCountRequestsByRouteAndStatus(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := mustOpenAPI(t, func(e *env) { e.api.Metrics = rider.NewMetrics(reg) })
	alice := e.token("u-alice", dispatch.RoleRider)
	r := e.mustRequest(alice, "Idempotency-Key", "m")
	e.mustRequest(alice, "Idempotency-Key", "m")
	e.do("GET", "/v1/rides/nope", alice, "")
	s := e.openEvents(alice, r.ID, "")
	s.nextRide(t)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"understudy_rider_requests_total", map[string]string{"route": "GET /v1/rides/{id}", "status": "404"}, 1},
		{"understudy_rider_requests_total", map[string]string{"route": "POST /v1/rides", "status": "201"}, 2},
		{"understudy_rider_ride_requests_total", map[string]string{"outcome": "created"}, 1},
		{"understudy_rider_ride_requests_total", map[string]string{"outcome": "replayed"}, 1},
		{"understudy_rider_request_duration_seconds", map[string]string{"route": "POST /v1/rides"}, 2},
		{"understudy_rider_request_duration_seconds", map[string]string{"route": "GET /v1/rides/{id}/events"}, -1},
		{"understudy_rider_sse_subscribers", nil, 1},
	} {
		if got := metricValue(t, reg, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	s.close()
	dispatchtest.Eventually(t, func() error {
		if n := metricValue(t, reg, "understudy_rider_sse_subscribers", nil); n != 0 {
			return fmt.Errorf("understudy_rider_sse_subscribers = %v after the stream closed, want 0", n)
		}
		return nil
	})
}

// metricValue reads the series of name with labels from reg: a counter's or gauge's
// value, a histogram's sample count, or -1 when there is no such series.
func metricValue(tb testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue series
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return -1
}

func TestConfigValidate(t *testing.T) {
	if err := rider.DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	// Every setting of a zero Config but idempotency-wait (0: answer 409 at once) is
	// out of range, and named in the error as RegisterFlags names it.
	err := rider.Config{}.Validate()
	var c rider.Config
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	c.RegisterFlags(fs)
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name != "idempotency-wait" && (err == nil || !strings.Contains(err.Error(), f.Name+" ")) {
			t.Errorf("zero %s not reported: %v", f.Name, err)
		}
	})
	if err == nil || !strings.Contains(err.Error(), "StreamWriteTimeout") {
		t.Errorf("zero StreamWriteTimeout not reported: %v", err)
	}
	if err := (&rider.API{Config: rider.DefaultConfig()}).Open(context.Background()); err == nil || !strings.Contains(fmt.Sprint(err), "Engine") {
		t.Fatalf("Open without dependencies = %v", err)
	}
}

// busyKeys is the memory store of idempotency keys refusing its first few
// completions as a busy bucket does (unavailable, retry), as under overload.
type busyKeys struct {
	*memstore.IdempotencyStore
	mu     sync.Mutex
	refuse int
}

func (k *busyKeys) Complete(ctx context.Context, scope, key, fingerprint, rideID string, ttl time.Duration) error {
	k.mu.Lock()
	busy := k.refuse > 0
	k.refuse--
	k.mu.Unlock()
	if busy {
		return &dispatch.Error{Code: dispatch.ECodeUnavailable, RetryAfterS: 1, Message: "idempotency keys did not answer in time"}
	}
	return k.IdempotencyStore.Complete(ctx, scope, key, fingerprint, rideID, ttl)
}

// A ride created while the key store is too busy to record it at once: the key is
// recorded on a retry before the answer, so the client's retry of the request
// replays the ride. Before, the key stayed reserved (409 to every retry for a
// minute), and after that a retry would have made a second ride.
func TestIdempotencyKeyRecordedThroughABusyStore(t *testing.T) {
	e := mustOpenAPI(t, func(e *env) { e.api.Idempotency = &busyKeys{IdempotencyStore: e.idem, refuse: 2} })
	alice := e.token("u-alice", dispatch.RoleRider)
	first := e.mustRequest(alice, "Idempotency-Key", "trip-busy")
	resp, b := e.do("POST", "/v1/rides", alice, seoulTrip, "Idempotency-Key", "trip-busy")
	if got := decode[rider.Ride](t, b); resp.StatusCode != 201 || got.ID != first.ID || resp.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry after a busy record = %d %s, want 201 replaying ride %s", resp.StatusCode, b, first.ID)
	}
}
