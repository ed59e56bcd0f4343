package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
	"github.com/understudy/understudy/dispatch/jwtauth"
	"github.com/understudy/understudy/dispatch/memstore"
	"github.com/understudy/understudy/driver"
	"github.com/understudy/understudy/driver/client"
	"github.com/understudy/understudy/driver/drivertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// gateway serves a driver gateway; gate, if set, may answer a handshake itself.
type gateway struct {
	keys *jwtauth.Keys
	gw   *driver.Gateway
	srv  *httptest.Server
	gate atomic.Pointer[func(http.ResponseWriter) bool]
	// regions, if set, answers GET /v1/regions; else the gateway answers it.
	regions atomic.Pointer[string]
}

func mustOpenGateway(tb testing.TB) *gateway {
	tb.Helper()
	g := &gateway{keys: &jwtauth.Keys{Secret: []byte("client-test-secret-0123")}}
	engine := &dispatch.Engine{Store: memstore.New(), Config: dispatch.DefaultConfig()}
	g.gw = &driver.Gateway{Engine: engine.Drivers(), Verifier: g.keys, Config: driver.DefaultConfig()}
	if err := g.gw.Open(context.Background()); err != nil {
		tb.Fatal(err)
	}
	engine.Notifier = g.gw
	if err := engine.Open(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = engine.Close() })
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v := g.regions.Load(); v != nil && r.URL.Path == "/v1/regions" {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, *v)
			return
		}
		if f := g.gate.Load(); f != nil && (*f)(w) {
			return
		}
		g.gw.ServeHTTP(w, r)
	}))
	tb.Cleanup(func() {
		_ = g.gw.Close()
		g.srv.Close()
	})
	return g
}

func (g *gateway) url() string { return "ws" + strings.TrimPrefix(g.srv.URL, "http") + driver.Path }

func (g *gateway) token(tb testing.TB, sub string) string {
	tb.Helper()
	tok, err := g.keys.Sign(dispatch.Identity{Subject: sub, Role: dispatch.RoleDriver}, time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// refuse makes the next n handshakes fail with status.
func (g *gateway) refuse(n int32, status int) *atomic.Int32 {
	var seen atomic.Int32
	f := func(w http.ResponseWriter) bool {
		if seen.Add(1) > n {
			return false
		}
		http.Error(w, "not now", status)
		return true
	}
	g.gate.Store(&f)
	return &seen
}

func TestBackoffIsFullJitter(t *testing.T) {
	d := client.Dialer{MinBackoff: 100 * time.Millisecond, MaxBackoff: 3 * time.Second}
	ceiling := d.MinBackoff
	for n := 0; n < 70; n, ceiling = n+1, min(d.MaxBackoff, 2*ceiling) {
		var lo, hi time.Duration = ceiling, 0
		for range 2000 {
			b := d.Backoff(n)
			if b < 0 || b > ceiling {
				t.Fatalf("attempt %d: backoff %s outside [0, %s]", n, b, ceiling)
			}
			lo, hi = min(lo, b), max(hi, b)
		}
		// Full jitter spreads over the whole range, not just its upper half.
		if lo > ceiling/10 || hi < ceiling*9/10 {
			t.Fatalf("attempt %d: backoffs in [%s, %s], want spread over [0, %s]", n, lo, hi, ceiling)
		}
	}
}

// TestReconnectResumes: after a drop the client redials by itself, through a server
// that refuses for a while, and the new connection starts with a resumed welcome.
func TestReconnectResumes(t *testing.T) {
	g := mustOpenGateway(t)
	var drops atomic.Int32
	d := client.Dialer{Reconnect: true, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond,
		OnDisconnect: func(error) { drops.Add(1) }}
	c, err := d.Dial(context.Background(), g.url(), g.token(t, "d-1"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if w := drivertest.Next(t, c, driver.TypeWelcome); w.DriverID != "d-1" || w.Resumed {
		t.Fatalf("first welcome = %s", w.Raw)
	}
	attempts := g.refuse(3, http.StatusServiceUnavailable)
	c.Drop()
	if err := c.Location(context.Background(), dispatch.Point{Lat: 1, Lng: 1}); err == nil {
		// The drop may not have been noticed yet; either way the next frame is the welcome.
		t.Log("sent before the drop was noticed")
	}
	w := drivertest.Next(t, c, driver.TypeWelcome)
	if !w.Resumed || w.DriverID != "d-1" {
		t.Fatalf("welcome after the drop = %s, want resumed", w.Raw)
	}
	if got := attempts.Load(); got < 4 {
		t.Fatalf("%d handshakes, want 3 refused then 1 accepted", got)
	}
	if drops.Load() != 1 {
		t.Fatalf("OnDisconnect called %d times, want 1", drops.Load())
	}
	if err := c.Available(context.Background()); err != nil {
		t.Fatal(err)
	}
	if e := drivertest.Next(t, c, driver.TypeError); e.Code != dispatch.ECodeConflict {
		t.Fatalf("available without a location: %s, want conflict", e.Raw)
	}
}

// TestReconnectGivesUp: a refused token or being replaced ends the client instead of
// redialing forever.
func TestReconnectGivesUp(t *testing.T) {
	g := mustOpenGateway(t)
	d := client.Dialer{Reconnect: true, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}

	c, err := d.Dial(context.Background(), g.url(), g.token(t, "d-1"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	drivertest.Next(t, c, driver.TypeWelcome)
	g.refuse(1000, http.StatusUnauthorized)
	c.Drop()
	var he *client.HandshakeError
	if err := drivertest.End(t, c); !errors.As(err, &he) || he.Status != http.StatusUnauthorized {
		t.Fatalf("client stopped with %v, want the 401", err)
	}
	g.gate.Store(nil)

	first, err := d.Dial(context.Background(), g.url(), g.token(t, "d-2"))
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	drivertest.Next(t, first, driver.TypeWelcome)
	second, err := d.Dial(context.Background(), g.url(), g.token(t, "d-2"))
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	drivertest.Next(t, second, driver.TypeWelcome)
	if err := drivertest.End(t, first); !websocket.IsCloseError(err, driver.CloseReplaced) {
		t.Fatalf("replaced client stopped with %v, want close %d", err, driver.CloseReplaced)
	}
	if err := second.Offline(context.Background()); err != nil {
		t.Fatal(err)
	}
	drivertest.Next(t, second, driver.TypeAck)
}

func TestCloseStopsClient(t *testing.T) {
	g := mustOpenGateway(t)
	c, err := client.Dialer{Reconnect: true}.Dial(context.Background(), g.url(), g.token(t, "d-1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil { // with the welcome still unread
		t.Fatal(err)
	}
	if err := drivertest.End(t, c); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Err = %v, want ErrClosed", err)
	}
	if err := c.Available(context.Background()); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("send after Close = %v, want ErrClosed", err)
	}
	dispatchtest.Eventually(t, func() error {
		if n := g.gw.Connected(); n != 0 {
			return fmt.Errorf("%d sockets still connected after Close", n)
		}
		return nil
	})
}

func TestDialRefused(t *testing.T) {
	g := mustOpenGateway(t)
	_, err := client.Dial(context.Background(), g.url(), "not-a-token")
	var he *client.HandshakeError
	if !errors.As(err, &he) || he.Status != 401 || he.Code != dispatch.ECodeUnauthorized || he.Detail == "" {
		t.Fatalf("dial with a bad token: %v, want 401 unauthorized with a detail", err)
	}
}

// Two regions that each send the driver to the other: the client follows a bounded
// number of moves, then stops with a *MoveError.
func TestReconnectMovesAreBounded(t *testing.T) {
	var a, b *httptest.Server
	var dials atomic.Int32
	bounce := func(other **httptest.Server) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if !websocket.IsWebSocketUpgrade(r) { // GET /v1/regions: a lone region
				http.NotFound(w, r)
				return
			}
			dials.Add(1)
			up := websocket.Upgrader{}
			ws, err := up.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			defer ws.Close()
			_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"welcome","driver_id":"d-1","state":"offline"}`))
			_ = ws.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`{"type":"reconnect","region":"x","url":%q,"reason":"wrong_region"}`, (*other).URL)))
			_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(driver.CloseReconnect, "go"), time.Now().Add(time.Second))
			_, _, _ = ws.ReadMessage() // until the client hangs up
		}
	}
	a = httptest.NewServer(bounce(&b))
	defer a.Close()
	b = httptest.NewServer(bounce(&a))
	defer b.Close()
	c, err := client.Dialer{Reconnect: true, MinBackoff: time.Millisecond, MaxBackoff: time.Minute}.Dial(context.Background(),
		"ws"+strings.TrimPrefix(a.URL, "http")+driver.Path, "tok")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var me *client.MoveError
	if err := drivertest.End(t, c); !errors.As(err, &me) {
		t.Fatalf("client ended with %v, want a *MoveError", err)
	}
	if n := dials.Load(); n < 2 || n > client.MaxMoves+1 {
		t.Errorf("%d dials, want 2 to %d", n, client.MaxMoves+1)
	}
}
