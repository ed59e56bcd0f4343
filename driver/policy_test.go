package driver_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
	"github.com/understudy/understudy/driver"
	"github.com/understudy/understudy/driver/drivertest"
)

// stalledEngine holds the first location update until released: the gateway's reader
// stalls on it, as it would behind a slow store or a starved CPU.
type stalledEngine struct {
	driver.Engine
	once     sync.Once
	stalled  chan struct{} // closed once the reader is held
	released chan struct{}
}

func (e *stalledEngine) UpdateLocation(ctx context.Context, id string, p dispatch.Point) error {
	e.once.Do(func() {
		close(e.stalled)
		<-e.released
	})
	return e.Engine.UpdateLocation(ctx, id, p)
}

// rawDial opens a socket for sub with a plain gorilla client and reads its welcome.
func (r *region) rawDial(tb testing.TB, sub string) *websocket.Conn {
	tb.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(r.url(), http.Header{"Authorization": {"Bearer " + r.token(tb, sub)}})
	must(tb, err)
	tb.Cleanup(func() { _ = ws.Close() })
	if m := readMessage(tb, ws); m.Type != driver.TypeWelcome {
		tb.Fatalf("first frame %s, want welcome", m.Raw)
	}
	return ws
}

func readMessage(tb testing.TB, ws *websocket.Conn) driver.Message {
	tb.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(drivertest.Wait))
	_, data, err := ws.ReadMessage()
	if err != nil {
		tb.Fatalf("read: %v", err)
	}
	m, err := driver.DecodeMessage(data)
	must(tb, err)
	return m
}

// readUntil reads ws until a frame of type typ with ref, or the socket's end, which it
// returns.
func readUntil(tb testing.TB, ws *websocket.Conn, typ, ref string) error {
	tb.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(dispatchtest.Patience))
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			return err
		}
		if m, err := driver.DecodeMessage(data); err == nil && m.Type == typ && m.Ref == ref {
			return nil
		}
	}
}

// A driver that keeps to the frame rate is not closed when the server falls behind:
// its frames queue up while the reader is stalled and arrive in one burst, far over
// FrameBurst, and the server just reads them.
func TestStalledServerKeepsCompliantDriver(t *testing.T) {
	const perSecond = 50
	eng := &stalledEngine{stalled: make(chan struct{}), released: make(chan struct{})}
	r := mustOpenRegion(t, func(g *driver.Gateway) {
		eng.Engine = g.Engine
		g.Engine = eng
		g.Config.FrameRate, g.Config.FrameBurst = perSecond, 5
	})
	ws := r.rawDial(t, "d-1")
	frame := []byte(`{"type":"location","lat":37.5668,"lng":126.9783}`)
	must(t, ws.WriteMessage(websocket.TextMessage, frame))
	<-eng.stalled
	// One second of frames at the allowed rate while the server reads nothing.
	tick := time.NewTicker(time.Second / perSecond)
	for range perSecond {
		<-tick.C
		must(t, ws.WriteMessage(websocket.TextMessage, frame))
	}
	tick.Stop()
	close(eng.released)
	must(t, ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"location","lat":37.5668,"lng":126.9783,"ref":"after"}`)))
	if err := readUntil(t, ws, driver.TypeAck, "after"); err != nil {
		t.Fatalf("a driver within the rate, whose frames the stalled server read in a burst: %v, want its ack", err)
	}
}

// errStillOpen is what flood reports when the socket answered after the flood.
var errStillOpen = errors.New("still open: the frame after the flood was answered")

// flood writes up to n frames (pings for kind "ping") as fast as ws takes them, then a
// ref'd location, and returns how the socket ended: errStillOpen if that location was
// answered.
func flood(tb testing.TB, ws *websocket.Conn, kind string, n int) error {
	tb.Helper()
	ended := make(chan error, 1)
	go func() {
		for {
			_ = ws.SetReadDeadline(time.Now().Add(dispatchtest.Patience))
			_, data, err := ws.ReadMessage()
			if err != nil {
				ended <- err
				return
			}
			if m, err := driver.DecodeMessage(data); err == nil && m.Type == driver.TypeAck && m.Ref == "after-flood" {
				ended <- errStillOpen
				return
			}
		}
	}()
	frame := []byte(`{"type":"location","lat":37.5668,"lng":126.9783}`)
	for range n {
		select {
		case err := <-ended:
			return err
		default:
		}
		deadline := time.Now().Add(time.Second)
		if kind == "ping" {
			_ = ws.WriteControl(websocket.PingMessage, nil, deadline)
		} else {
			_ = ws.SetWriteDeadline(deadline)
			_ = ws.WriteMessage(websocket.TextMessage, frame)
		}
	}
	_ = ws.SetWriteDeadline(time.Now().Add(time.Second))
	_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"location","lat":37.5668,"lng":126.9783,"ref":"after-flood"}`))
	return <-ended
}

// A socket that keeps sending faster than the frame rate, data frames or pings, is
// still closed with 1008: the server reads it at FrameReadRate and closes it once its
// budget (FrameBurst plus FloodWindow's worth) is spent.
func TestFloodIsClosed1008(t *testing.T) {
	r := mustOpenRegion(t, func(g *driver.Gateway) {
		g.Config.FrameRate, g.Config.FrameBurst, g.Config.FloodWindow = 10, 5, time.Second
	})
	for _, kind := range []string{"text", "ping"} {
		t.Run(kind, func(t *testing.T) {
			err := flood(t, r.rawDial(t, "d-"+kind), kind, 20000)
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation || ce.Text != "too many frames" {
				t.Fatalf("a flood of %s frames ended with %v, want close 1008 too many frames", kind, err)
			}
		})
	}
}

// A text frame that is not valid UTF-8 closes the socket with 1007 (RFC 6455, 8.1).
func TestInvalidUTF8Closes1007(t *testing.T) {
	r := mustOpenRegion(t, nil)
	ws := r.rawDial(t, "d-1")
	must(t, ws.WriteMessage(websocket.TextMessage, []byte("{\"type\":\"location\",\"ref\":\"\xff\xfe\",\"lat\":1,\"lng\":1}")))
	_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"location","ref":"sync","lat":1,"lng":1}`))
	err := readUntil(t, ws, driver.TypeAck, "sync")
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseInvalidFramePayloadData {
		t.Fatalf("invalid UTF-8 in a text frame: %v, want close 1007", err)
	}
}

// syncBuffer is a bytes.Buffer safe for a logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// Refused frames are logged at Info and policy closes at Warn, with typed attributes.
func TestRefusalsAreLogged(t *testing.T) {
	var logs syncBuffer
	r := mustOpenRegion(t, func(g *driver.Gateway) {
		g.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	ws := r.rawDial(t, "d-1")
	must(t, ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"arrived","ride_id":"r_nope"}`)))
	must(t, ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"location","lat":1,"lat":2,"lng":3}`)))
	must(t, ws.WriteMessage(websocket.TextMessage, []byte("{\"type\":\"offline\",\"ref\":\"\xff\"}")))
	if err := readUntil(t, ws, driver.TypeAck, "never"); err == nil {
		t.Fatal("socket still open")
	}
	dispatchtest.Eventually(t, func() error {
		out := logs.String()
		for _, want := range []string{
			`"level":"INFO","msg":"driver frame refused","driver_id":"d-1","code":"not_found"`,
			`"type":"arrived"`,
			`"level":"INFO","msg":"driver frame refused","driver_id":"d-1","type":"invalid","code":"invalid","err":"duplicate field \"lat\""`,
			`"level":"WARN","msg":"driver socket closed: text frame is not valid UTF-8","driver_id":"d-1","close":1007,"code":"invalid"`,
		} {
			if !strings.Contains(out, want) {
				return fmt.Errorf("log lacks %s:\n%s", want, out)
			}
		}
		return nil
	})
}

// Every ref the protocol allows (up to 128 characters) comes back whole, on success
// and on refusal.
func TestLongRefIsEchoedWhole(t *testing.T) {
	r := mustOpenRegion(t, nil)
	ws := r.rawDial(t, "d-1")
	ref := strings.Repeat("r", 100) + "드라이버" // 112 bytes
	for _, c := range []struct{ frame, typ string }{
		{`{"type":"location","lat":37.5668,"lng":126.9783,"ref":"` + ref + `"}`, driver.TypeAck},
		{`{"type":"accept","offer_id":"o_none","ref":"` + ref + `"}`, driver.TypeError},
	} {
		must(t, ws.WriteMessage(websocket.TextMessage, []byte(c.frame)))
		if m := readMessage(t, ws); m.Type != c.typ || m.Ref != ref {
			t.Errorf("%s: answered %s, want %s with the ref whole", c.frame[:24], m.Raw, c.typ)
		}
	}
}
