package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
	"github.com/understudy/understudy/driver"
	"github.com/understudy/understudy/driver/drivertest"
)

// startNATS starts a NATS server with JetStream in dir on 127.0.0.1:port, as a
// deployment's external NATS would be, and returns it; stop it with stopNATS.
func startNATS(tb testing.TB, port int, dir string) *natsserver.Server {
	tb.Helper()
	ns, err := natsserver.NewServer(&natsserver.Options{
		ServerName: "external", Host: "127.0.0.1", Port: port,
		JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true,
	})
	if err != nil {
		tb.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(dispatchtest.Patience) {
		ns.Shutdown()
		tb.Fatalf("nats on port %d did not start", port)
	}
	return ns
}

func stopNATS(ns *natsserver.Server) {
	ns.Shutdown()
	ns.WaitForShutdown()
}

// freePort returns a TCP port nothing listens on now.
func freePort(tb testing.TB) int {
	tb.Helper()
	_, p, _ := net.SplitHostPort(freeAddr(tb))
	port, _ := strconv.Atoi(p)
	return port
}

// readyz answers the status and body of s's /readyz.
func readyz(tb testing.TB, s *server) (int, string) {
	tb.Helper()
	return get(tb, "http://"+s.Addr()+"/readyz")
}

// TestRegionSurvivesNATSRestart: the external NATS of a running region goes away and
// comes back on the same address and store. While it is away /readyz says so; once
// it is back the region is ready again by itself and requests, completes and pays
// rides as before.
func TestRegionSurvivesNATSRestart(t *testing.T) {
	port, dir := freePort(t), t.TempDir()
	ns := startNATS(t, port, dir)
	t.Cleanup(func() { stopNATS(ns) }) // after the region's own cleanup
	s := mustServe(t, "--nats", fmt.Sprintf("nats://127.0.0.1:%d", port), "--match-interval", "0")
	if code, body := readyz(t, s); code != 200 {
		t.Fatalf("/readyz = %d %q", code, body)
	}
	d := mustOnline(t, s, "d-1", near)
	rider := mustToken(t, s, "u-1", dispatch.RoleRider)
	trip := `{"pickup":{"lat":37.5665,"lng":126.9780},"dropoff":{"lat":37.5512,"lng":126.9882}}`

	stopNATS(ns)
	dispatchtest.Eventually(t, func() error {
		if code, body := readyz(t, s); code != 503 || !strings.HasPrefix(strings.ToLower(body), "nats: reconnecting") {
			return fmt.Errorf("/readyz = %d %q, want 503 saying nats is away", code, body)
		}
		return nil
	})

	// Meanwhile what would wait on the log is refused at once, and nothing else is.
	for _, r := range []struct{ method, path, tok, body string }{
		{"POST", "/v1/rides", rider, trip},
		{"GET", "/v1/driver/trips", mustToken(t, s, "d-1", dispatch.RoleDriver), ""},
	} {
		resp := outageCall(t, s, r.method, r.path, r.tok, r.body)
		if resp.code != 503 || resp.problem != "unavailable" || resp.retryAfter == "" || !strings.Contains(resp.detail, "nats") {
			t.Fatalf("%s %s while nats is away = %+v, want 503 unavailable with Retry-After", r.method, r.path, resp)
		}
	}
	if resp := outageCall(t, s, "POST", "/v1/estimates", rider, trip); resp.code != 200 {
		t.Fatalf("estimate while nats is away = %+v, want 200", resp)
	}
	ns = startNATS(t, port, dir)
	dispatchtest.Eventually(t, func() error {
		if code, body := readyz(t, s); code != 200 {
			return fmt.Errorf("/readyz = %d %q, want 200 once nats is back", code, body)
		}
		return nil
	})
	if code, pcode, detail := call(t, s, "POST", "/v1/rides", rider, trip); code != 201 {
		t.Fatalf("ride request after nats came back = %d %s %s", code, pcode, detail)
	}
	o := drivertest.Next(t, d, driver.TypeOffer)
	send(t, d.Accept(ctx(t), o.OfferID))
	drivertest.Next(t, d, driver.TypeAssigned)
	for _, step := range []func(context.Context, string) error{d.Arrived, d.Start, d.Complete} {
		send(t, step(ctx(t), o.RideID))
		if m := drivertest.Next(t, d, driver.TypeRide); m.Ride == nil {
			t.Fatalf("trip step answered %s", m.Raw)
		}
	}
	if code, _, body := authGet(t, s, "/v1/driver/trips", "d-1", dispatch.RoleDriver); code != 200 || !strings.Contains(body, o.RideID) {
		t.Fatalf("trips after nats came back = %d %s", code, body)
	}
}

type answer struct {
	code                        int
	problem, detail, retryAfter string
}

// outageCall is call with a deadline (a request that waits for NATS to come back
// fails the test instead of hanging it) that also answers Retry-After.
func outageCall(tb testing.TB, s *server, method, path, tok, body string) answer {
	tb.Helper()
	req, _ := http.NewRequest(method, "http://"+s.Addr()+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := openAPIClient(tb)
	hc.Timeout = 20 * time.Second
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var p struct{ Code, Detail string }
	_ = json.NewDecoder(resp.Body).Decode(&p)
	return answer{resp.StatusCode, p.Code, p.Detail, resp.Header.Get("Retry-After")}
}

// TestRegionStartsBeforeItsNATS: serve started while its --nats is not up yet waits
// for it, saying so in its log, and is ready once it answers.
func TestRegionStartsBeforeItsNATS(t *testing.T) {
	port, dir := freePort(t), t.TempDir()
	var logs syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan *server, 1)
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, []string{"--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--nats", fmt.Sprintf("nats://127.0.0.1:%d", port)},
			io.Discard, &logs, func(s *server) { got <- s })
	}()
	dispatchtest.Eventually(t, func() error {
		select {
		case err := <-done:
			t.Fatalf("serve without its nats: %v, want it to wait", err)
		default:
		}
		if !strings.Contains(logs.String(), "waiting for nats jetstream") {
			return fmt.Errorf("no word of waiting in the log: %s", logs.String())
		}
		return nil
	})
	ns := startNATS(t, port, dir)
	defer stopNATS(ns)
	var s *server
	select {
	case s = <-got:
	case err := <-done:
		t.Fatalf("serve once nats is up: %v", err)
	case <-time.After(dispatchtest.Patience):
		t.Fatalf("serve did not start within %s of its nats", dispatchtest.Patience)
	}
	if code, body := readyz(t, s); code != 200 {
		t.Fatalf("/readyz = %d %q", code, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestNATSClosedForGoodStopsTheRegion: nats.go closes a connection for good on some
// protocol errors (here a subject over the server's control line, which no request
// can make any more). The region then stops with an error, after draining, so that
// its supervisor starts it again, instead of answering 500 until someone notices.
func TestNATSClosedForGoodStopsTheRegion(t *testing.T) {
	var logs syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan *server, 1)
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, []string{"--addr", "127.0.0.1:0", "--data-dir", t.TempDir()}, io.Discard, &logs, func(s *server) { got <- s })
	}()
	s := <-got
	if err := s.nats.Publish(strings.Repeat("x", 8<<10), nil); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "nats connection closed for good") {
			t.Fatalf("serve = %v, want an error saying nats closed for good", err)
		}
	case <-time.After(dispatchtest.Patience):
		code, body := readyz(t, s)
		t.Fatalf("serve still running %s after its nats connection closed; /readyz %d %q", dispatchtest.Patience, code, body)
	}
	if !strings.Contains(logs.String(), "nats connection closed for good") {
		t.Fatalf("nothing logged: %s", logs.String())
	}
}
