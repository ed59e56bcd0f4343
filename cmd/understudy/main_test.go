package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
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

func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "understudy.json")
	if err := os.WriteFile(file, []byte(`{"addr":"127.0.0.1:1","offer_timeout":"20s","max_search":"3m","max_token_lifetime":"2h","fare":{"base":3000}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"UNDERSTUDY_MAX_SEARCH": "4m", "UNDERSTUDY_ADDR": "127.0.0.1:2"}
	cfg, err := loadConfig([]string{"--config", file, "--addr", "127.0.0.1:3", "--match-interval", "0"},
		func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Dispatch
	if cfg.Addr != "127.0.0.1:3" || d.OfferTimeout != 20*time.Second || d.MaxSearch != 4*time.Minute ||
		d.MatchInterval != 0 || d.Fare.Base != 3000 || d.Fare.PerKm != 760 || cfg.MaxTokenLifetime != 2*time.Hour {
		t.Fatalf("flags > env > file > defaults broken: %+v", cfg)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	badDur := filepath.Join(dir, "dur.json")
	for name, text := range map[string]string{bad: `{"offer_timout":"20s"}`, badDur: `{"offer_timeout":"soon"}`} {
		if err := os.WriteFile(name, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--offer-timeout", "0s"}, "offer_timeout"},
		{[]string{"--h3-res", "20"}, "h3_resolution"},
		{[]string{"--log-level", "loud"}, "log-level"},
		{[]string{"--region", "seoul:1"}, "region"},
		{[]string{"--sse-heartbeat", "0s"}, "heartbeat"},
		{[]string{"--driver-grace", "0s"}, "driver-grace"},
		{[]string{"--max-token-lifetime", "0s"}, "max-token-lifetime"},
		{[]string{"--config", bad}, "unknown field"},
		{[]string{"--config", badDur}, "offer_timeout"},
		{[]string{"--config", filepath.Join(dir, "missing.json")}, "read config"},
		{[]string{"stray"}, "unexpected arguments"},
	} {
		_, err := loadConfig(c.args, func(string) string { return "" }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error mentioning %q", c.args, err, c.want)
		}
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
