package rider_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
	"github.com/understudy/understudy/dispatch/jwtauth"
	"github.com/understudy/understudy/dispatch/memstore"
	"github.com/understudy/understudy/rider"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is a rider API on a real engine and memory stores, served by httptest.
type env struct {
	tb     testing.TB
	api    *rider.API
	engine *dispatch.Engine
	keys   *jwtauth.Keys
	idem   *memstore.IdempotencyStore
	clock  *clock
	srv    *httptest.Server
}

// mustOpenAPI starts an API; options change it (or its Engine) before Open.
func mustOpenAPI(tb testing.TB, options ...func(*env)) *env {
	tb.Helper()
	e := &env{tb: tb, clock: &clock{now: time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)}}
	e.keys = &jwtauth.Keys{Secret: []byte("0123456789abcdef0123456789abcdef")}
	e.engine = &dispatch.Engine{Store: memstore.New(), Config: dispatch.DefaultConfig(), Stepped: true}
	e.idem = &memstore.IdempotencyStore{Now: e.clock.Now}
	e.api = &rider.API{Engine: e.engine.Riders(), Verifier: e.keys, Idempotency: e.idem, Config: rider.DefaultConfig(), Now: e.clock.Now}
	for _, o := range options {
		o(e)
	}
	e.engine.Notifier = e.api
	if err := e.engine.Open(context.Background()); err != nil {
		tb.Fatalf("open engine: %v", err)
	}
	if err := e.api.Open(context.Background()); err != nil {
		tb.Fatalf("open API: %v", err)
	}
	e.srv = httptest.NewServer(e.api.Handler())
	tb.Cleanup(e.srv.Close)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.api.Drain(ctx); err != nil {
			tb.Errorf("drain: %v", err)
		}
		if err := e.api.Close(); err != nil {
			tb.Errorf("close: %v", err)
		}
	})
	return e
}

func (e *env) token(sub string, role dispatch.Role) string {
	e.tb.Helper()
	tok, err := e.keys.Sign(dispatch.Identity{Subject: sub, Role: role}, time.Hour)
	if err != nil {
		e.tb.Fatal(err)
	}
	return tok
}

// do sends a request; hdr is name, value pairs. It returns the response (body read
// and closed) and the body.
func (e *env) do(method, path, token, body string, hdr ...string) (*http.Response, []byte) {
	e.tb.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.tb.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	if _, set := req.Header["Content-Type"]; body != "" && !set {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.tb.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp, b
}

// mustRequest requests a ride for rider and returns it.
func (e *env) mustRequest(token string, hdr ...string) rider.Ride {
	e.tb.Helper()
	resp, b := e.do("POST", "/v1/rides", token, seoulTrip, hdr...)
	if resp.StatusCode != http.StatusCreated {
		e.tb.Fatalf("POST /v1/rides = %d %s", resp.StatusCode, b)
	}
	return decode[rider.Ride](e.tb, b)
}

// driverAt connects a driver at p and makes it available.
func (e *env) driverAt(id string, p dispatch.Point) {
	e.tb.Helper()
	ctx := context.Background()
	if _, err := e.engine.Drivers().Connect(ctx, id); err != nil {
		e.tb.Fatal(err)
	}
	if err := e.engine.Drivers().UpdateLocation(ctx, id, p); err != nil {
		e.tb.Fatal(err)
	}
	if _, err := e.engine.Drivers().SetAvailable(ctx, id); err != nil {
		e.tb.Fatal(err)
	}
}

const seoulTrip = `{"pickup":{"lat":37.5665,"lng":126.978},"dropoff":{"lat":37.5512,"lng":126.9882}}`

var cityHall = dispatch.Point{Lat: 37.5665, Lng: 126.978}

func decode[T any](tb testing.TB, b []byte) T {
	tb.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		tb.Fatalf("decode %T from %s: %v", v, b, err)
	}
	return v
}

// clock is a clock tests move by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// sseFrame is one server-sent event, or a comment line (Comment set).
type sseFrame struct {
	ID, Event, Data, Comment string
}

// sseStream reads frames from an open event stream until it ends.
type sseStream struct {
	resp   *http.Response
	frames chan sseFrame
	cancel context.CancelFunc
}

// openEvents opens GET /v1/rides/{id}/events; lastID "" sends no Last-Event-ID.
func (e *env) openEvents(token, rideID, lastID string) *sseStream {
	e.tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/v1/rides/"+rideID+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		cancel()
		e.tb.Fatalf("open events: %v", err)
	}
	s := &sseStream{resp: resp, frames: make(chan sseFrame, 64), cancel: cancel}
	e.tb.Cleanup(s.close)
	go func() {
		defer close(s.frames)
		sc := bufio.NewScanner(resp.Body)
		var f sseFrame
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if f != (sseFrame{}) {
					s.frames <- f
				}
				f = sseFrame{}
			case strings.HasPrefix(line, ":"):
				f.Comment = strings.TrimSpace(line[1:])
			case strings.HasPrefix(line, "id: "):
				f.ID = line[4:]
			case strings.HasPrefix(line, "event: "):
				f.Event = line[7:]
			case strings.HasPrefix(line, "data: "):
				f.Data = line[6:]
			}
		}
	}()
	return s
}

func (s *sseStream) close() {
	s.cancel()
	s.resp.Body.Close()
	for range s.frames { // let the reader finish
	}
}

// next returns the next event (skipping comments), or ok false if the stream ended.
func (s *sseStream) next(tb testing.TB) (f sseFrame, ok bool) {
	tb.Helper()
	deadline := time.After(dispatchtest.Patience)
	for {
		select {
		case f, ok := <-s.frames:
			if !ok || f.Comment == "" {
				return f, ok
			}
		case <-deadline:
			tb.Fatalf("no event within %s", dispatchtest.Patience)
		}
	}
}

// nextRide returns the next event's ride and id.
func (s *sseStream) nextRide(tb testing.TB) (rider.Ride, string) {
	tb.Helper()
	f, ok := s.next(tb)
	if !ok {
		tb.Fatal("the stream ended")
	}
	return decode[rider.Ride](tb, []byte(f.Data)), f.ID
}

// ended waits for the stream to end, failing on any event.
func (s *sseStream) ended(tb testing.TB) {
	tb.Helper()
	if f, ok := s.next(tb); ok {
		tb.Fatalf("stream goes on with %+v, want its end", f)
	}
}
