package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
	"github.com/understudy/understudy/dispatch/jwtauth"
	"github.com/understudy/understudy/dispatch/natslog"
	"github.com/understudy/understudy/dispatch/redisstore/redistest"
	"github.com/understudy/understudy/driver"
	"github.com/understudy/understudy/driver/client"
)

// Crash tests run the real binary, kill it with SIGKILL and start it again.

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

// mustBuild compiles cmd/understudy once per test run.
func mustBuild(tb testing.TB) string {
	tb.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "understudy-bin-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "understudy")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return binPath
}

// proc is one running `understudy serve` process.
type proc struct {
	cmd    *exec.Cmd
	addr   string
	exited chan struct{}
	mu     sync.Mutex
	log    bytes.Buffer
}

// startProc runs the binary with args and waits until it listens.
func startProc(tb testing.TB, args ...string) *proc {
	tb.Helper()
	return startProcEnv(tb, nil, args...)
}

// startProcEnv is startProc with extra environment variables (KEY=value).
func startProcEnv(tb testing.TB, env []string, args ...string) *proc {
	tb.Helper()
	p := &proc{cmd: exec.Command(mustBuild(tb), append([]string{"serve"}, args...)...), exited: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	p.cmd.Stderr = writerFunc(func(b []byte) (int, error) { p.mu.Lock(); defer p.mu.Unlock(); return p.log.Write(b) })
	if err := p.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	listening := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if addr, ok := strings.CutPrefix(sc.Text(), "understudy listening on http://"); ok {
				listening <- addr
			}
		}
	}()
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	tb.Cleanup(p.kill)
	select {
	case p.addr = <-listening:
		return p
	case <-p.exited:
		tb.Fatalf("understudy exited at start: %s", p.stderr())
	case <-time.After(dispatchtest.Patience):
		tb.Fatalf("understudy did not listen within %s: %s", dispatchtest.Patience, p.stderr())
	}
	return nil
}

func (p *proc) stderr() string { p.mu.Lock(); defer p.mu.Unlock(); return p.log.String() }

// kill ends the process with SIGKILL, as a crash would, and waits for it.
func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// crashWorld is a region under test: its data dir, tokens and clients.
type crashWorld struct {
	tb      testing.TB
	args    []string
	dataDir string
	proc    *proc
	keys    *jwtauth.Keys // nil: the data dir's development secret
	drivers map[string]*client.Client
}

func (w *crashWorld) token(id string, role dispatch.Role) string {
	w.tb.Helper()
	keys := w.keys
	if keys == nil {
		var err error
		if keys, _, err = clientKeys(Config{DataDir: w.dataDir}); err != nil {
			w.tb.Fatal(err)
		}
	}
	tok, err := keys.Sign(dispatch.Identity{Subject: id, Role: role}, time.Hour)
	if err != nil {
		w.tb.Fatal(err)
	}
	return tok
}

// api calls the rider HTTP API as rider u-1 and decodes the answer into a ride.
func (w *crashWorld) api(method, path string, body any, wantStatus int) map[string]any {
	w.tb.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+w.proc.addr+path, rd)
	req.Header.Set("Authorization", "Bearer "+w.token("u-1", dispatch.RoleRider))
	req.Header.Set("Content-Type", "application/json")
	hc := openAPIClient(w.tb) // the real binary's answers, held to docs/openapi.yaml
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		w.tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		w.tb.Fatalf("%s %s: %d %s, want %d", method, path, resp.StatusCode, b, wantStatus)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		w.tb.Fatalf("%s %s: %v in %s", method, path, err, b)
	}
	return out
}

func (w *crashWorld) request(pickup dispatch.Point) string {
	w.tb.Helper()
	r := w.api("POST", "/v1/rides", map[string]any{"pickup": pickup, "dropoff": seoulStation}, 201)
	return r["id"].(string)
}

func (w *crashWorld) status(rideID string) string {
	w.tb.Helper()
	return w.api("GET", "/v1/rides/"+rideID, nil, 200)["status"].(string)
}

// online connects driver id at p over the websocket and makes it available.
func (w *crashWorld) online(id string, p dispatch.Point) {
	w.tb.Helper()
	ctx := context.Background()
	d := client.Dialer{Reconnect: true, MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second}
	c, err := d.Dial(ctx, "ws://"+w.proc.addr+driver.Path, w.token(id, dispatch.RoleDriver))
	if err != nil {
		w.tb.Fatalf("dial %s: %v", id, err)
	}
	w.tb.Cleanup(func() { _ = c.Close() })
	w.drivers[id] = c
	w.next(id, driver.TypeWelcome)
	if err := c.Location(ctx, p); err != nil {
		w.tb.Fatal(err)
	}
	if err := c.Available(ctx); err != nil {
		w.tb.Fatal(err)
	}
	w.next(id, driver.TypeAck)
}

// next returns driver id's next frame of type typ, skipping other frames.
func (w *crashWorld) next(id, typ string) driver.Message {
	w.tb.Helper()
	deadline := time.After(dispatchtest.Patience)
	for {
		select {
		case m, ok := <-w.drivers[id].Frames():
			if !ok {
				w.tb.Fatalf("driver %s: connection ended waiting for %s: %v", id, typ, w.drivers[id].Err())
			}
			if m.Type == typ {
				return m
			}
			if m.Type == driver.TypeError {
				w.tb.Fatalf("driver %s: error frame %s %s waiting for %s", id, m.Code, m.Message, typ)
			}
		case <-deadline:
			w.tb.Fatalf("driver %s: no %s frame within %s", id, typ, dispatchtest.Patience)
		}
	}
}

// trip takes driver id's next offer through the given steps (accept, arrived, start, complete).
func (w *crashWorld) trip(id, rideID string, steps ...string) {
	w.tb.Helper()
	ctx := context.Background()
	c := w.drivers[id]
	o := w.next(id, driver.TypeOffer)
	if o.RideID != rideID {
		w.tb.Fatalf("driver %s offered %s, want %s", id, o.RideID, rideID)
	}
	for _, s := range steps {
		var err error
		answer := driver.TypeRide
		switch s {
		case "accept":
			answer = driver.TypeAssigned
			err = c.Accept(ctx, o.OfferID)
		case "arrived":
			err = c.Arrived(ctx, rideID)
		case "start":
			err = c.Start(ctx, rideID)
		case "complete":
			err = c.Complete(ctx, rideID)
		default:
			w.tb.Fatalf("unknown trip step %q", s)
		}
		if err != nil {
			w.tb.Fatalf("driver %s: send %s for ride %s: %v", id, s, rideID, err)
		}
		w.next(id, answer)
	}
}

var seoulStation = dispatch.Point{Lat: 37.5547, Lng: 126.9707}

// TestCrashAndRestart builds rides in every state on a real process, kills it with
// SIGKILL, starts it again on the same data (and Redis), and checks that each ride and
// each driver is where it was and the ledger has each completed trip exactly once.
func TestCrashAndRestart(t *testing.T) {
	for _, c := range []struct {
		name  string
		redis bool
	}{{"redis and embedded nats", true}, {"embedded default", false}} {
		t.Run(c.name, func(t *testing.T) {
			w := &crashWorld{tb: t, dataDir: t.TempDir(), drivers: map[string]*client.Client{}}
			w.args = []string{"--addr", freeAddr(t), "--data-dir", w.dataDir, "--match-interval", "0",
				"--offer-timeout", "1m", "--max-search", "1h"}
			if c.redis {
				w.args = append(w.args, "--redis", redistest.URL(t), "--region", "crash")
			}
			w.proc = startProc(t, w.args...)

			gangnam := dispatch.Point{Lat: 37.4979, Lng: 127.0276}
			for i, id := range []string{"d-1", "d-2", "d-3", "d-4", "d-5"} {
				w.online(id, offset(gangnam, float64(100*(i+1)), 0))
			}
			rides := map[string]string{}
			rides["completed"] = w.request(gangnam)
			w.trip("d-1", rides["completed"], "accept", "arrived", "start", "complete")
			rides["in_progress"] = w.request(gangnam)
			w.trip("d-1", rides["in_progress"], "accept", "arrived", "start")
			rides["arrived"] = w.request(gangnam)
			w.trip("d-2", rides["arrived"], "accept", "arrived")
			rides["matched"] = w.request(gangnam)
			w.trip("d-3", rides["matched"], "accept")
			rides["offered"] = w.request(gangnam)
			w.next("d-4", driver.TypeOffer) // d-4 stays silent
			rides["cancelled"] = w.request(gangnam)
			w.next("d-5", driver.TypeOffer)
			w.api("POST", "/v1/rides/"+rides["cancelled"]+"/cancel", nil, 200)
			w.next("d-5", driver.TypeOfferRevoked)
			rides["far"] = w.request(dispatch.Point{Lat: 35.1796, Lng: 129.0756}) // Busan: nobody near

			w.proc.kill()
			w.proc = startProc(t, w.args...)

			want := map[string]string{
				"completed": "completed", "in_progress": "in_progress", "arrived": "arrived",
				"matched": "matched", "offered": "searching", "cancelled": "cancelled", "far": "searching",
			}
			for k, id := range rides {
				if got := w.status(id); got != want[k] {
					t.Errorf("ride %s (%s) is %s after the crash", id, k, got)
				}
			}
			// The drivers' clients reconnect by themselves; welcome says where each stands.
			wantDriver := map[string]dispatch.DriverState{"d-1": "on_trip", "d-2": "en_route", "d-3": "en_route"}
			if c.redis { // hot state survived: presence and the outstanding offer too
				wantDriver["d-4"], wantDriver["d-5"] = "offered", "available"
			} else { // in-memory presence is gone; those apps go available again
				wantDriver["d-4"], wantDriver["d-5"] = "offline", "offline"
			}
			for id, state := range wantDriver {
				wm := w.next(id, driver.TypeWelcome)
				if wm.State != state {
					t.Errorf("driver %s welcomed as %s after the crash, want %s", id, wm.State, state)
				}
			}
			if t.Failed() {
				t.FailNow()
			}
			// Trips carry on, and complete retried after the restart pays once.
			ctx := context.Background()
			for range 2 {
				if err := w.drivers["d-1"].Complete(ctx, rides["in_progress"]); err != nil {
					t.Fatal(err)
				}
				w.next("d-1", driver.TypeRide)
			}
			var out bytes.Buffer
			if err := run(ctx, []string{"ledger", "export", "--data-dir", w.dataDir}, &out, io.Discard); err != nil {
				t.Fatal(err)
			}
			count := map[string]int{}
			for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
				var e dispatch.LedgerEntry
				if err := json.Unmarshal([]byte(line), &e); err != nil {
					t.Fatalf("ledger line %q: %v", line, err)
				}
				count[e.RideID]++
			}
			if len(count) != 2 || count[rides["completed"]] != 1 || count[rides["in_progress"]] != 1 {
				t.Fatalf("ledger after the crash: %v, want each of %s and %s once", count, rides["completed"], rides["in_progress"])
			}
		})
	}
}

// offset returns p moved north and east by about the given metres.
func offset(p dispatch.Point, northM, eastM float64) dispatch.Point {
	return dispatch.Point{Lat: p.Lat + northM/111_000, Lng: p.Lng + eastM/88_000}
}

// TestReplicaKilledMidOffer runs two real replicas of one region on one Redis and one
// NATS, kills the one that made an offer with SIGKILL while the offer is out, and checks
// that the survivor takes the ride over: it expires the orphaned offer and offers the
// ride to a driver connected to it.
func TestReplicaKilledMidOffer(t *testing.T) {
	nats, err := natslog.StartEmbedded(t.TempDir(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer nats.Close()
	const secret = "replica-test-secret-0123456789"
	env := []string{"UNDERSTUDY_SECRET=" + secret}
	common := []string{"--redis", redistest.URL(t), "--nats", nats.URL(), "--region", "seoul",
		"--match-interval", "0", "--offer-timeout", "1s", "--sweep-interval", "300ms", "--max-search", "1m"}
	a := startProcEnv(t, env, append([]string{"--addr", freeAddr(t), "--data-dir", t.TempDir()}, common...)...)
	b := startProcEnv(t, env, append([]string{"--addr", freeAddr(t), "--data-dir", t.TempDir()}, common...)...)

	keys := &jwtauth.Keys{Secret: []byte(secret)}
	wa := &crashWorld{tb: t, proc: a, keys: keys, drivers: map[string]*client.Client{}}
	wb := &crashWorld{tb: t, proc: b, keys: keys, drivers: wa.drivers}
	hub := dispatch.Point{Lat: 37.5665, Lng: 126.9780}
	wa.online("d-on-a", offset(hub, 50, 0))
	wb.online("d-on-b", offset(hub, 800, 0))

	// A matches the ride it was asked for to the nearer driver, d-on-a.
	rideID := wa.request(hub)
	first := wa.next("d-on-a", driver.TypeOffer)
	if first.RideID != rideID {
		t.Fatalf("d-on-a offered %s, want %s", first.RideID, rideID)
	}
	killedAt := time.Now()
	a.kill()

	o := wb.next("d-on-b", driver.TypeOffer)
	if o.RideID != rideID {
		t.Fatalf("after A died, d-on-b was offered %s, want %s", o.RideID, rideID)
	}
	t.Logf("the survivor re-offered the ride %s after the kill", time.Since(killedAt).Round(time.Millisecond))
	if err := wb.drivers["d-on-b"].Accept(context.Background(), o.OfferID); err != nil {
		t.Fatal(err)
	}
	wb.next("d-on-b", driver.TypeAssigned)
	if got := wb.status(rideID); got != "matched" {
		t.Fatalf("ride on the survivor is %s, want matched", got)
	}
}

// A ride that ended as no_driver is still no_driver after a crash (the crash test
// above keeps its searches open; this one lets one run out first).
func TestCrashKeepsNoDriverRides(t *testing.T) {
	for _, redis := range []bool{false, true} {
		t.Run(fmt.Sprintf("redis=%v", redis), func(t *testing.T) {
			w := &crashWorld{tb: t, dataDir: t.TempDir(), drivers: map[string]*client.Client{}}
			w.args = []string{"--addr", freeAddr(t), "--data-dir", w.dataDir, "--match-interval", "0", "--max-search", "300ms",
				"--rider-rate", "1000", "--rider-burst", "1000"} // the test polls the ride
			if redis {
				w.args = append(w.args, "--redis", redistest.URL(t), "--region", "nodriver")
			}
			w.proc = startProc(t, w.args...)
			id := w.request(dispatch.Point{Lat: 35.1796, Lng: 129.0756}) // nobody near
			dispatchtest.Eventually(t, func() error {
				if s := w.status(id); s != "no_driver" {
					return fmt.Errorf("ride %s is %s, want no_driver after its 300 ms search", id, s)
				}
				return nil
			})
			w.proc.kill()
			w.proc = startProc(t, w.args...)
			if got := w.status(id); got != "no_driver" {
				t.Fatalf("ride after the crash is %s, want no_driver", got)
			}
		})
	}
}
