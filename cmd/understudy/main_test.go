package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) {
		if binDir != "" {
			_ = os.RemoveAll(binDir) // the binary the crash tests built
		}
	}))
}

// mustServe starts `understudy serve` in process on 127.0.0.1:0 and stops it at cleanup.
func mustServe(tb testing.TB, args ...string) *server {
	tb.Helper()
	return mustServeLog(tb, io.Discard, args...)
}

// mustServeLog is mustServe writing the server's log to stderr.
func mustServeLog(tb testing.TB, stderr io.Writer, args ...string) *server {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan *server, 1)
	done := make(chan error, 1)
	args = append([]string{"--addr", "127.0.0.1:0", "--data-dir", tb.TempDir()}, args...)
	go func() { done <- serve(ctx, args, io.Discard, stderr, func(s *server) { got <- s }) }()
	select {
	case s := <-got:
		var once sync.Once
		stop := func() {
			once.Do(func() {
				cancel()
				if err := <-done; err != nil {
					tb.Errorf("serve returned %v", err)
				}
			})
		}
		stops.Store(s, stop)
		tb.Cleanup(stop)
		return s
	case err := <-done:
		cancel()
		tb.Fatalf("serve: %v", err)
	case <-time.After(dispatchtest.Patience):
		cancel()
		tb.Fatalf("serve did not start within %s", dispatchtest.Patience)
	}
	return nil
}

// stops holds each test server's stop function.
var stops sync.Map // *server → func()

// stopServer stops a server from mustServe before the test ends and waits for it.
func stopServer(tb testing.TB, s *server) {
	tb.Helper()
	stop, ok := stops.Load(s)
	if !ok {
		tb.Fatal("stopServer: not a server from mustServe")
	}
	stop.(func())()
}

// get GETs url anonymously and validates the exchange against docs/openapi.yaml.
func get(tb testing.TB, url string) (int, string) {
	tb.Helper()
	hc := openAPIClient(tb)
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(url)
	if err != nil {
		tb.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestServeAnswersHealthReadinessMetrics(t *testing.T) {
	s := mustServe(t)
	base := "http://" + s.Addr()
	if code, body := get(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz = %d %q", code, body)
	}
	if code, body := get(t, base+"/readyz"); code != 200 || body != "ready\n" {
		t.Fatalf("/readyz = %d %q", code, body)
	}
	code, body := get(t, base+"/metrics")
	for _, want := range []string{"understudy_dispatch_available_drivers 0", "understudy_dispatch_pending_rides 0", "go_goroutines"} {
		if code != 200 || !strings.Contains(body, want) {
			t.Fatalf("/metrics = %d, missing %q", code, want)
		}
	}
	if code, _ := get(t, base+"/nope"); code != 404 {
		t.Fatalf("/nope = %d, want 404", code)
	}
}

func TestServeFailsFastOnBusyAddress(t *testing.T) {
	s := mustServe(t)
	err := serve(context.Background(), []string{"--addr", s.Addr(), "--data-dir", t.TempDir()}, io.Discard, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "listen") {
		t.Fatalf("second serve on %s: %v, want a listen error", s.Addr(), err)
	}
}

func TestVersionAndUnknownCommand(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"version"}, &out, io.Discard); err != nil || !strings.HasPrefix(out.String(), "understudy ") {
		t.Fatalf("version: %q %v", out.String(), err)
	}
	if err := run(context.Background(), []string{"fly"}, io.Discard, io.Discard); err == nil {
		t.Fatal("unknown command accepted")
	}
}

// supplied is the condition that e's supply index holds n drivers.
func supplied(e *dispatch.Engine, n int) func() error {
	return func() error {
		if got := e.Available(); got != n {
			return fmt.Errorf("%d drivers in the supply, want %d", got, n)
		}
		return nil
	}
}

// engineOnline registers driver id at p through the engine and makes it available.
func engineOnline(tb testing.TB, e *dispatch.Engine, id string, p dispatch.Point) {
	tb.Helper()
	ctx := context.Background()
	if _, err := e.Drivers().Connect(ctx, id); err != nil {
		tb.Fatal(err)
	}
	if err := e.Drivers().UpdateLocation(ctx, id, p); err != nil {
		tb.Fatal(err)
	}
	if _, err := e.Drivers().SetAvailable(ctx, id); err != nil {
		tb.Fatal(err)
	}
}

// waitOffered waits until ride id has an outstanding offer and returns the ride.
func waitOffered(tb testing.TB, e *dispatch.Engine, id string) dispatch.Ride {
	tb.Helper()
	return dispatchtest.Await(tb, func() (dispatch.Ride, error) {
		r, err := e.Riders().Ride(context.Background(), id)
		if err == nil && r.Offer == nil {
			err = fmt.Errorf("ride %s is %s without an offer", id, r.Status)
		}
		return r, err
	})
}

// acceptedRide has rider u-1 request a ride from pickup to dropoff, waits for its offer,
// and has the offered driver accept it; it returns the matched ride.
func acceptedRide(tb testing.TB, e *dispatch.Engine, pickup, dropoff dispatch.Point) dispatch.Ride {
	tb.Helper()
	ctx := context.Background()
	ride, err := e.Riders().RequestRide(ctx, "u-1", pickup, dropoff)
	if err != nil {
		tb.Fatal(err)
	}
	offered := waitOffered(tb, e, ride.ID)
	matched, err := e.Drivers().Accept(ctx, offered.Offer.DriverID, offered.Offer.ID)
	if err != nil {
		tb.Fatal(err)
	}
	return matched
}
