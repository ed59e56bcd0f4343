package client_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
	"github.com/understudy/understudy/dispatch/jwtauth"
	"github.com/understudy/understudy/dispatch/memstore"
	"github.com/understudy/understudy/dispatch/problem"
	"github.com/understudy/understudy/rider"
	"github.com/understudy/understudy/rider/client"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var trip = rider.RideRequest{
	Pickup:  dispatch.Point{Lat: 37.5665, Lng: 126.978},
	Dropoff: dispatch.Point{Lat: 37.5512, Lng: 126.9882},
}

// scripted serves each request with the next of answers and records what it got. It
// is a lone region of a server that predates regions: GET /v1/regions is 404, and
// not recorded.
type scripted struct {
	mu      sync.Mutex
	answers []func(http.ResponseWriter, *http.Request)
	got     []*http.Request
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v1/regions" {
		http.NotFound(w, r)
		return
	}
	s.mu.Lock()
	i := len(s.got)
	s.got = append(s.got, r.Clone(context.Background()))
	s.mu.Unlock()
	if i >= len(s.answers) {
		i = len(s.answers) - 1
	}
	s.answers[i](w, r)
}

func (s *scripted) requests() []*http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got
}

func refuse(code dispatch.ECode, retryAfter string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		problem.Write(w, r, dispatch.Errorf(code, "scripted %s", code))
	}
}

func hangUp(w http.ResponseWriter, _ *http.Request) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err == nil {
		conn.Close()
	}
}

func fast(c *client.Client) *client.Client {
	c.Backoff, c.MaxBackoff = time.Millisecond, 5*time.Millisecond
	return c
}

func TestRequestRideRetriesWithTheSameKey(t *testing.T) {
	s := &scripted{answers: []func(http.ResponseWriter, *http.Request){
		refuse(dispatch.ECodeUnavailable, ""),
		refuse(dispatch.ECodeRateLimited, "0"),
		hangUp,
		func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusCreated)
			fmt.Fprint(w, `{"id":"r_1","rider_id":"u-1","status":"searching","driver":null}`)
		},
	}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	c := fast(client.New(srv.URL, "tok"))
	r, err := c.RequestRide(context.Background(), trip, "")
	if err != nil || r.ID != "r_1" || r.Status != dispatch.RideSearching {
		t.Fatalf("RequestRide = %+v, %v", r, err)
	}
	got := s.requests()
	if len(got) != 4 {
		t.Fatalf("%d attempts, want 4", len(got))
	}
	key := got[0].Header.Get(rider.IdempotencyKeyHeader)
	for i, req := range got {
		if req.Header.Get(rider.IdempotencyKeyHeader) != key || key == "" || req.Header.Get("Authorization") != "Bearer tok" {
			t.Fatalf("attempt %d headers %v; want key %q and the token every time", i, req.Header, key)
		}
	}
}

func TestClientErrorsAreNotRetried(t *testing.T) {
	s := &scripted{answers: []func(http.ResponseWriter, *http.Request){refuse(dispatch.ECodeIdempotency, "")}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	_, err := fast(client.New(srv.URL, "tok")).RequestRide(context.Background(), trip, "k")
	var e *client.Error
	if !errors.As(err, &e) || e.StatusCode != 422 || client.Code(err) != "idempotency_conflict" || len(s.requests()) != 1 {
		t.Fatalf("err %v after %d attempts, want one 422 idempotency_conflict", err, len(s.requests()))
	}
}

func TestRetriesGiveUp(t *testing.T) {
	s := &scripted{answers: []func(http.ResponseWriter, *http.Request){refuse(dispatch.ECodeUnavailable, "")}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	c := fast(client.New(srv.URL, "tok"))
	c.Retries = 2
	if _, err := c.Estimate(context.Background(), trip); client.Code(err) != "unavailable" || len(s.requests()) != 3 {
		t.Fatalf("err %v after %d attempts, want unavailable after 3", err, len(s.requests()))
	}
}

func TestFollowResumesWithLastEventID(t *testing.T) {
	s := &scripted{answers: []func(http.ResponseWriter, *http.Request){
		func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, ": hello\n\nid: 3\ndata: {\"id\":\"r_1\",\"status\":\"searching\"}\n\n")
			// then the connection ends without a final status
		},
		hangUp,
		func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "id: 7\ndata: {\"id\":\"r_1\",\n")
			fmt.Fprint(w, "data: \"status\":\"matched\"}\n\nid: 9\ndata: {\"id\":\"r_1\",\"status\":\"cancelled\"}\n\nid: 10\ndata: {}\n\n")
		},
	}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	st, err := fast(client.New(srv.URL, "tok")).Follow(context.Background(), "r_1", 0)
	if err != nil {
		t.Fatal(err)
	}
	statuses := drain(st)
	if err := st.Err(); err != nil || fmt.Sprint(statuses) != "[searching matched cancelled]" || st.LastEventID() != 9 {
		t.Fatalf("statuses %v, last id %d, err %v", statuses, st.LastEventID(), err)
	}
	got := s.requests()
	if len(got) != 3 || got[0].Header.Get("Last-Event-ID") != "" || got[1].Header.Get("Last-Event-ID") != "3" || got[2].Header.Get("Last-Event-ID") != "3" {
		t.Fatalf("%d connections; want the reconnects to send Last-Event-ID 3", len(got))
	}
}

func TestFollowStopsWithItsContext(t *testing.T) {
	release := make(chan struct{})
	s := &scripted{answers: []func(http.ResponseWriter, *http.Request){
		func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "id: 1\ndata: {\"id\":\"r_1\",\"status\":\"searching\"}\n\n")
			http.NewResponseController(w).Flush()
			select {
			case <-r.Context().Done():
			case <-release:
			}
		},
	}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	defer close(release)
	ctx, cancel := context.WithCancel(context.Background())
	st, err := client.New(srv.URL, "tok").Follow(ctx, "r_1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if r := <-st.C; r.Status != dispatch.RideSearching {
		t.Fatalf("first event %+v", r)
	}
	cancel()
	for range st.C {
	}
	if !errors.Is(st.Err(), context.Canceled) {
		t.Fatalf("Err = %v, want context.Canceled", st.Err())
	}
}

// TestAgainstTheAPI runs the client against the real rider API on a real engine.
func TestAgainstTheAPI(t *testing.T) {
	ctx := context.Background()
	keys := &jwtauth.Keys{Secret: []byte("0123456789abcdef0123456789abcdef")}
	engine := &dispatch.Engine{Store: memstore.New(), Config: dispatch.DefaultConfig()}
	api := &rider.API{Engine: engine.Riders(), Verifier: keys, Idempotency: memstore.NewIdempotencyStore(), Config: rider.DefaultConfig()}
	engine.Notifier = api
	if err := engine.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = engine.Close() }()
	if err := api.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = api.Close() }()
	srv := httptest.NewServer(api.Handler())
	defer srv.Close()
	defer func() { _ = api.Drain(ctx) }()
	tok, _ := keys.Sign(dispatch.Identity{Subject: "u-1", Role: dispatch.RoleRider}, time.Hour)
	c := client.New(srv.URL, tok)

	if est, err := c.Estimate(ctx, trip); err != nil || est.Fare.Amount <= 0 || est.PickupETAS != nil {
		t.Fatalf("Estimate = %+v, %v", est, err)
	}
	r, err := c.RequestRide(ctx, trip, "k-1")
	if err != nil {
		t.Fatal(err)
	}
	if again, err := c.RequestRide(ctx, trip, "k-1"); err != nil || again.ID != r.ID {
		t.Fatalf("replay = %+v, %v", again, err)
	}
	st, err := c.Follow(ctx, r.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if first := <-st.C; first.Status != dispatch.RideSearching {
		t.Fatalf("first event %+v", first)
	}
	if got, err := c.Cancel(ctx, r.ID); err != nil || got.Status != dispatch.RideCancelled {
		t.Fatalf("Cancel = %+v, %v", got, err)
	}
	if last := <-st.C; last.Status != dispatch.RideCancelled {
		t.Fatalf("last event %+v", last)
	}
	if _, ok := <-st.C; ok || st.Err() != nil {
		t.Fatalf("stream after the final status: open %v, err %v", ok, st.Err())
	}
	if got, err := c.Ride(ctx, r.ID); err != nil || got.Status != dispatch.RideCancelled {
		t.Fatalf("Ride = %+v, %v", got, err)
	}
	// Resuming at the final event: an already closed stream.
	st, err = c.Follow(ctx, r.ID, st.LastEventID())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := <-st.C; ok || st.Err() != nil {
		t.Fatalf("resumed at the end: open %v, err %v", ok, st.Err())
	}
	if _, err := c.Ride(ctx, "r_none"); client.Code(err) != "not_found" {
		t.Fatalf("unknown ride: %v", err)
	}
}

// Two regions that each say the other serves the pickup: the client takes it for an
// area changing hands and asks again, Retries times and for HandOver at least, then
// stops with an error matching ErrWrongRegion, every request with the same key.
func TestWrongRegionHopsAreBounded(t *testing.T) {
	var a, b *httptest.Server
	var mu sync.Mutex
	var keys []string
	to := func(other **httptest.Server) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/v1/regions" {
				http.NotFound(w, r)
				return
			}
			mu.Lock()
			keys = append(keys, r.Header.Get("Idempotency-Key"))
			mu.Unlock()
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusMisdirectedRequest)
			fmt.Fprintf(w, `{"status":421,"code":"wrong_region","region":"x","url":%q}`, (*other).URL)
		}
	}
	a = httptest.NewServer(to(&b))
	defer a.Close()
	b = httptest.NewServer(to(&a))
	defer b.Close()
	c := fast(client.New(a.URL, "tok"))
	c.HandOver = 100 * time.Millisecond
	began := time.Now()
	_, err := c.RequestRide(context.Background(), rider.RideRequest{}, "k-1")
	if !errors.Is(err, client.ErrWrongRegion) {
		t.Fatalf("err = %v, want ErrWrongRegion", err)
	}
	if waited := time.Since(began); waited < c.HandOver || waited > dispatchtest.Patience {
		t.Errorf("gave up after %s, want after its HandOver of %s", waited, c.HandOver)
	}
	mu.Lock()
	defer mu.Unlock()
	if least := 2 * (c.Retries + 1); len(keys) < least {
		t.Errorf("%d requests, want %d at least: both regions, once and after each of %d retries", len(keys), least, c.Retries)
	}
	for _, k := range keys {
		if k != "k-1" {
			t.Errorf("keys %v, want k-1 each time", keys)
			break
		}
	}
}

// drain reads st to its end and returns the statuses it gave, in order.
func drain(st *client.Stream) []dispatch.RideStatus {
	var statuses []dispatch.RideStatus
	for r := range st.C {
		statuses = append(statuses, r.Status)
	}
	return statuses
}
