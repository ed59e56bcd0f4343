package driver_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
	"github.com/understudy/understudy/dispatch/httproute"
	"github.com/understudy/understudy/dispatch/jwtauth"
	"github.com/understudy/understudy/dispatch/memstore"
	"github.com/understudy/understudy/driver"
	"github.com/understudy/understudy/driver/client"
	"github.com/understudy/understudy/driver/drivertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	pickup  = dispatch.Point{Lat: 37.5665, Lng: 126.9780}
	dropoff = dispatch.Point{Lat: 37.5512, Lng: 126.9882}
	near    = dispatch.Point{Lat: 37.5668, Lng: 126.9783}
	farther = dispatch.Point{Lat: 37.5700, Lng: 126.9820}
)

// fakeTimers replaces time.AfterFunc: tests fire the timers they choose.
type fakeTimers struct {
	mu     sync.Mutex
	timers []*fakeTimer
}

type fakeTimer struct {
	d       time.Duration
	f       func()
	stopped atomic.Bool
}

func (ft *fakeTimers) AfterFunc(d time.Duration, f func()) func() bool {
	t := &fakeTimer{d: d, f: f}
	ft.mu.Lock()
	ft.timers = append(ft.timers, t)
	ft.mu.Unlock()
	return func() bool { return !t.stopped.Swap(true) }
}

func (ft *fakeTimers) count() int {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	return len(ft.timers)
}

// last returns the nth timer, waiting for it to be started.
func (ft *fakeTimers) last(tb testing.TB, n int) *fakeTimer {
	tb.Helper()
	return dispatchtest.Await(tb, func() (*fakeTimer, error) {
		ft.mu.Lock()
		defer ft.mu.Unlock()
		if len(ft.timers) < n {
			return nil, fmt.Errorf("%d grace timers started, want %d", len(ft.timers), n)
		}
		return ft.timers[n-1], nil
	})
}

// region is a gateway on a real engine and store, served on 127.0.0.1.
type region struct {
	gw     *driver.Gateway
	engine *dispatch.Engine
	keys   *jwtauth.Keys
	srv    *httptest.Server
	timers *fakeTimers
	// tap, if set, sees every engine event after the gateway did.
	tap atomic.Pointer[func(dispatch.Event)]
}

// mustOpenRegion starts an engine (matching at once) and a gateway; opt adjusts the
// gateway before Open.
func mustOpenRegion(tb testing.TB, opt func(*driver.Gateway)) *region {
	tb.Helper()
	cfg := dispatch.DefaultConfig()
	cfg.MatchInterval = 0
	r := &region{keys: &jwtauth.Keys{Secret: []byte("test-secret-0123456789")}, timers: &fakeTimers{}}
	r.engine = &dispatch.Engine{Store: memstore.New(), Config: cfg}
	r.gw = &driver.Gateway{Engine: r.engine.Drivers(), Verifier: r.keys, Config: driver.DefaultConfig(), AfterFunc: r.timers.AfterFunc}
	if opt != nil {
		opt(r.gw)
	}
	if err := r.gw.Open(context.Background()); err != nil {
		tb.Fatal(err)
	}
	r.engine.Notifier = dispatch.Notifiers{r.gw, dispatch.NotifierFunc(func(ev dispatch.Event) {
		if f := r.tap.Load(); f != nil {
			(*f)(ev)
		}
	})}
	if err := r.engine.Open(context.Background()); err != nil {
		tb.Fatal(err)
	}
	r.srv = httptest.NewServer(httproute.NewMux(r.gw.Routes()...))
	tb.Cleanup(func() {
		_ = r.gw.Close()
		r.srv.Close()
		_ = r.engine.Close()
	})
	return r
}

func (r *region) url() string { return "ws" + strings.TrimPrefix(r.srv.URL, "http") + driver.Path }

func (r *region) token(tb testing.TB, sub string) string {
	tb.Helper()
	tok, err := r.keys.Sign(dispatch.Identity{Subject: sub, Role: dispatch.RoleDriver}, time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

func (r *region) dial(tb testing.TB, sub string, d client.Dialer) (*client.Client, driver.Message) {
	tb.Helper()
	c, err := d.Dial(context.Background(), r.url(), r.token(tb, sub))
	if err != nil {
		tb.Fatalf("dial %s: %v", sub, err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c, drivertest.Next(tb, c, driver.TypeWelcome)
}

// online connects sub at p, available.
func (r *region) online(tb testing.TB, sub string, p dispatch.Point) *client.Client {
	tb.Helper()
	c, _ := r.dial(tb, sub, client.Dialer{})
	must(tb, c.Location(context.Background(), p))
	must(tb, c.Available(context.Background()))
	drivertest.Next(tb, c, driver.TypeAck)
	return c
}

func (r *region) driverState(tb testing.TB, id string) dispatch.DriverState {
	tb.Helper()
	d, err := r.engine.Riders().Driver(context.Background(), id)
	if err != nil {
		tb.Fatal(err)
	}
	return d.State
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

// connected is the condition that g has n sockets.
func connected(g *driver.Gateway, n int) func() error {
	return func() error {
		if got := g.Connected(); got != n {
			return fmt.Errorf("%d sockets connected, want %d", got, n)
		}
		return nil
	}
}

// TestGraceExpiryTakesDriverOffline: a driver that does not come back within the grace
// period goes offline, and an offer it held cascades to the next driver.
func TestGraceExpiryTakesDriverOffline(t *testing.T) {
	r := mustOpenRegion(t, func(g *driver.Gateway) { g.Config.Grace = 42 * time.Second })
	c := r.online(t, "d-1", near)
	other := r.online(t, "d-2", farther)
	ride, err := r.engine.Riders().RequestRide(context.Background(), "u-1", pickup, dropoff)
	must(t, err)
	drivertest.Next(t, c, driver.TypeOffer)
	must(t, c.Close())

	timer := r.timers.last(t, 1)
	if timer.d != 42*time.Second {
		t.Fatalf("grace timer of %s, want the configured 42s", timer.d)
	}
	if got := r.driverState(t, "d-1"); got != dispatch.DriverOffered {
		t.Fatalf("within the grace period d-1 is %s, want offered still", got)
	}
	timer.f()
	if got := r.driverState(t, "d-1"); got != dispatch.DriverOffline {
		t.Fatalf("after the grace period d-1 is %s, want offline", got)
	}
	if o := drivertest.Next(t, other, driver.TypeOffer); o.RideID != ride.ID {
		t.Fatalf("d-2 got %s, want the cascaded ride %s", o.Raw, ride.ID)
	}
	// A later connection starts a new session.
	_, w := r.dial(t, "d-1", client.Dialer{})
	if w.State != dispatch.DriverOffline || w.Resumed {
		t.Fatalf("welcome = %s, want offline, not resumed", w.Raw)
	}
}

// TestResumeStopsGrace: a driver back within the grace period keeps its state, and a
// grace timer that fires late changes nothing.
func TestResumeStopsGrace(t *testing.T) {
	r := mustOpenRegion(t, nil)
	c := r.online(t, "d-1", near)
	c.Drop()
	timer := r.timers.last(t, 1)
	_, w := r.dial(t, "d-1", client.Dialer{})
	if w.State != dispatch.DriverAvailable || !w.Resumed {
		t.Fatalf("welcome = %s, want available, resumed", w.Raw)
	}
	if !timer.stopped.Load() {
		t.Fatal("resume did not stop the grace timer")
	}
	timer.f() // as if it had fired just before the stop
	if got := r.driverState(t, "d-1"); got != dispatch.DriverAvailable {
		t.Fatalf("late grace timer made d-1 %s", got)
	}
}

// TestGraceExpiryMidTripKeepsRide: the engine does not take a driver offline mid-trip,
// so its ride survives the grace period and the welcome carries it.
func TestGraceExpiryMidTripKeepsRide(t *testing.T) {
	r := mustOpenRegion(t, nil)
	c := r.online(t, "d-1", near)
	ride, err := r.engine.Riders().RequestRide(context.Background(), "u-1", pickup, dropoff)
	must(t, err)
	o := drivertest.Next(t, c, driver.TypeOffer)
	must(t, c.Accept(context.Background(), o.OfferID))
	drivertest.Next(t, c, driver.TypeAssigned)
	c.Drop()
	r.timers.last(t, 1).f()
	_, w := r.dial(t, "d-1", client.Dialer{})
	if w.State != dispatch.DriverEnRoute || w.Ride == nil || w.Ride.ID != ride.ID || w.Ride.Status != dispatch.RideMatched {
		t.Fatalf("welcome = %s, want en_route with ride %s", w.Raw, ride.ID)
	}
}

// TestSlowDriverIsDisconnected: Notify never blocks on a socket that is not read; the
// socket's queue overflows and it is closed with CloseTooSlow.
func TestSlowDriverIsDisconnected(t *testing.T) {
	r := mustOpenRegion(t, func(g *driver.Gateway) { g.Config.SendQueue = 8 })
	h := http.Header{"Authorization": {"Bearer " + r.token(t, "d-1")}}
	ws, _, err := websocket.DefaultDialer.Dial(r.url(), h)
	must(t, err)
	defer ws.Close()
	dispatchtest.Eventually(t, connected(r.gw, 1))

	offer := &dispatch.Offer{ID: "o_1", RideID: "r_1", Pickup: pickup, Dropoff: dropoff, Fare: dispatch.Money{Amount: 4800, Currency: "KRW"},
		ExpiresAt: time.Now().Add(time.Minute), PickupM: 120}
	began := time.Now()
	const n = 50000 // about 15 MB of frames: more than the socket buffers hold
	for i := 0; i < n; i++ {
		r.gw.Notify(dispatch.Event{Type: dispatch.EventOffer, DriverID: "d-1", Offer: offer})
	}
	if d := time.Since(began); d > 2*time.Second {
		t.Fatalf("%d Notify calls took %s: Notify blocks", n, d)
	}
	var ce *websocket.CloseError
	frames := 0
	_ = ws.SetReadDeadline(time.Now().Add(dispatchtest.Patience))
	for {
		_, _, err := ws.ReadMessage()
		if err != nil {
			if !errors.As(err, &ce) {
				t.Fatalf("after %d frames: %v, want a close frame", frames, err)
			}
			break
		}
		frames++
	}
	if ce.Code != driver.CloseTooSlow || frames >= n {
		t.Fatalf("closed with %d after %d of %d frames, want %d before the end", ce.Code, frames, n, driver.CloseTooSlow)
	}
}

// TestDrain: drivers are told to reconnect (1012), new handshakes are refused with 503,
// a socket that never answers the close is cut at ctx's deadline, and every driver
// stays as it was (available here), to resume on another replica.
func TestDrain(t *testing.T) {
	r := mustOpenRegion(t, func(g *driver.Gateway) { g.Config.CloseTimeout = time.Minute })
	polite := r.online(t, "d-1", near)
	// A socket that never reads, so it never answers the close frame; its driver is made
	// available through the engine.
	h := http.Header{"Authorization": {"Bearer " + r.token(t, "d-2")}}
	mute, _, err := websocket.DefaultDialer.Dial(r.url(), h)
	must(t, err)
	defer mute.Close()
	dispatchtest.Eventually(t, connected(r.gw, 2))
	// The socket counts as connected before the engine knows its driver (the welcome
	// follows the engine's Connect), so the location waits for that.
	dispatchtest.Eventually(t, func() error {
		return r.engine.Drivers().UpdateLocation(context.Background(), "d-2", farther)
	})
	_, err = r.engine.Drivers().SetAvailable(context.Background(), "d-2")
	must(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	began := time.Now()
	err = r.gw.Drain(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain = %v, want the deadline error for the mute socket", err)
	}
	if d := time.Since(began); d > 30*time.Second {
		t.Fatalf("Drain took %s with a 300ms deadline: it waited on the mute socket's close timeout", d)
	}
	if code := drivertest.CloseError(t, polite).Code; code != websocket.CloseServiceRestart {
		t.Fatalf("polite socket closed with %d, want 1012", code)
	}
	if r.gw.Connected() != 0 {
		t.Fatalf("%d sockets left after Drain", r.gw.Connected())
	}
	_, err = client.Dial(context.Background(), r.url(), r.token(t, "d-3"))
	var he *client.HandshakeError
	if !errors.As(err, &he) || he.Status != http.StatusServiceUnavailable {
		t.Fatalf("dial while draining: %v, want 503", err)
	}
	must(t, r.gw.Drain(context.Background())) // again: nothing left to drain
	for _, id := range []string{"d-1", "d-2"} {
		if got := r.driverState(t, id); got != dispatch.DriverAvailable {
			t.Errorf("%s is %s after Drain, want still available", id, got)
		}
	}
	if r.timers.count() != 0 {
		t.Fatalf("drain started %d grace timers; drivers resume elsewhere", r.timers.count())
	}
}

// TestPingKeepsSocketAlive: the server pings; a client that answers stays connected
// past several read timeouts, one that never reads is dropped.
func TestPingKeepsSocketAlive(t *testing.T) {
	r := mustOpenRegion(t, func(g *driver.Gateway) {
		g.Config.PingInterval = 40 * time.Millisecond
		g.Config.ReadTimeout = 300 * time.Millisecond
	})
	h := http.Header{"Authorization": {"Bearer " + r.token(t, "d-1")}}
	alive, _, err := websocket.DefaultDialer.Dial(r.url(), h)
	must(t, err)
	defer alive.Close()
	var pings atomic.Int32
	alive.SetPingHandler(func(data string) error {
		pings.Add(1)
		return alive.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	readErr := make(chan error, 1)
	go func() {
		for {
			if _, _, err := alive.ReadMessage(); err != nil {
				readErr <- err
				return
			}
		}
	}()
	dispatchtest.Eventually(t, func() error {
		if n := pings.Load(); n < 25 {
			return fmt.Errorf("%d pings answered, want 25 (over 3 read timeouts)", n)
		}
		return nil
	})
	if r.gw.Connected() != 1 {
		t.Fatal("the answering socket was dropped")
	}

	mute, _, err := websocket.DefaultDialer.Dial(r.url(), http.Header{"Authorization": {"Bearer " + r.token(t, "d-2")}})
	must(t, err)
	defer mute.Close()
	dispatchtest.Eventually(t, func() error {
		if n, timers := r.gw.Connected(), r.timers.count(); n != 1 || timers != 1 {
			return fmt.Errorf("%d sockets and %d grace timers, want the mute one dropped and its grace begun", n, timers)
		}
		return nil
	})
	_ = alive.Close()
	<-readErr
}
