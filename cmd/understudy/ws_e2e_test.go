package main

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
	"github.com/understudy/understudy/driver"
)

// rawDriver opens a driver socket on s with a plain gorilla client, reads its welcome,
// and reads everything after it on a goroutine: frames on the returned channel, which
// is closed when the socket ends; end then holds why.
type rawDriver struct {
	ws     *websocket.Conn
	frames chan driver.Message
	end    error
}

func mustRawDial(tb testing.TB, s *server, sub string) *rawDriver {
	tb.Helper()
	h := http.Header{"Authorization": {"Bearer " + mustToken(tb, s, sub, dispatch.RoleDriver)}}
	ws, _, err := websocket.DefaultDialer.Dial(driverURL(s), h)
	if err != nil {
		tb.Fatalf("dial %s: %v", sub, err)
	}
	tb.Cleanup(func() { _ = ws.Close() })
	d := &rawDriver{ws: ws, frames: make(chan driver.Message, 1024)}
	go func() {
		defer close(d.frames)
		for {
			_ = ws.SetReadDeadline(time.Now().Add(dispatchtest.Patience))
			_, data, err := ws.ReadMessage()
			if err != nil {
				d.end = err
				return
			}
			if m, err := driver.DecodeMessage(data); err == nil {
				d.frames <- m
			}
		}
	}()
	if m := d.next(tb); m.Type != driver.TypeWelcome {
		tb.Fatalf("first frame %s, want welcome", m.Raw)
	}
	return d
}

func (d *rawDriver) write(tb testing.TB, frame string) {
	tb.Helper()
	_ = d.ws.SetWriteDeadline(time.Now().Add(frameWait))
	if err := d.ws.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		tb.Fatalf("write %s: %v", frame, err)
	}
}

// next returns the next frame; the socket must still be open.
func (d *rawDriver) next(tb testing.TB) driver.Message {
	tb.Helper()
	select {
	case m, ok := <-d.frames:
		if !ok {
			tb.Fatalf("socket ended: %v", d.end)
		}
		return m
	case <-time.After(dispatchtest.Patience):
		tb.Fatalf("no frame within %s", dispatchtest.Patience)
	}
	return driver.Message{}
}

// sync sends a location with ref and returns nil once it is acked, or how the socket
// ended before that.
func (d *rawDriver) sync(tb testing.TB, ref string) error {
	tb.Helper()
	_ = d.ws.SetWriteDeadline(time.Now().Add(frameWait))
	_ = d.ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"location","lat":37.5668,"lng":126.9783,"ref":"`+ref+`"}`))
	for m := range d.frames {
		if m.Type == driver.TypeAck && m.Ref == ref {
			return nil
		}
	}
	return d.end
}

func closeCode(err error) int {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return 0
}

// A driver whose frames reach the server in a burst far over the burst of 40, but
// within 10 a second averaged over the flood window (here: 120 frames after a quiet
// start, as a server that stalled for 12 s would read them), is not closed.
func TestDriverBurstWithinTheAverageIsKept(t *testing.T) {
	s := mustServe(t)
	d := mustRawDial(t, s, "d-1")
	for range 120 {
		d.write(t, `{"type":"location","lat":37.5668,"lng":126.9783}`)
	}
	if err := d.sync(t, "after-burst"); err != nil {
		t.Fatalf("after 120 frames at once: %v, want the socket open", err)
	}
}

// Pings count towards the frame rate: a ping flood is closed with 1008 (today's
// limit: 20,000 pings in 1.7 s passed).
func TestDriverPingFloodCloses1008(t *testing.T) {
	s := mustServe(t)
	d := mustRawDial(t, s, "d-1")
	for range 20000 {
		if d.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(frameWait)) != nil {
			break // closed under us
		}
	}
	if err := d.sync(t, "after-pings"); closeCode(err) != websocket.ClosePolicyViolation {
		t.Fatalf("after a ping flood: %v, want close 1008 (nil: the socket is still open)", err)
	}
}

// A text frame that is not valid UTF-8 closes the socket with 1007 (RFC 6455, 8.1).
func TestDriverInvalidUTF8Closes1007(t *testing.T) {
	s := mustServe(t)
	d := mustRawDial(t, s, "d-1")
	d.write(t, "{\"type\":\"location\",\"lat\":37.5,\"lng\":127,\"ref\":\"caf\xe9\"}")
	if err := d.sync(t, "after"); closeCode(err) != websocket.CloseInvalidFramePayloadData {
		t.Fatalf("after invalid UTF-8: %v, want close 1007", err)
	}
}

// Frames are decoded as strictly as the rider API's bodies: a name twice is refused,
// and a field of the wrong type is named with the type it wants. The socket lives on.
func TestDriverStrictFrames(t *testing.T) {
	s := mustServe(t)
	d := mustRawDial(t, s, "d-1")
	for _, c := range []struct{ frame, want string }{
		{`{"type":"available","type":"offline"}`, `duplicate field "type"`},
		{`{"type":"location","lat":37.5,"lat":91,"lng":127}`, `duplicate field "lat"`},
		{`{"type":"offline","x":1,"x":2}`, `duplicate field "x"`},
		{`{"type":"location","lat":37.5,"lng":127,"ts":5}`, "field ts: want a string, got a number"},
		{`{"type":"location","lat":37.5,"lng":{"deg":127}}`, "field lng: want a number, got an object"},
		{`{"type":"accept","offer_id":["o_1"]}`, "field offer_id: want a string, got an array"},
		{`{"type":"location","lat":"37.5","lng":127}`, "field lat: want a number, got a string"},
	} {
		d.write(t, c.frame)
		m := d.next(t)
		if m.Type != driver.TypeError || m.Code != dispatch.ECodeInvalid || !strings.Contains(m.Message, c.want) {
			t.Errorf("%s: answered %s, want an invalid error saying %q", c.frame, m.Raw, c.want)
		}
	}
	if err := d.sync(t, "alive"); err != nil {
		t.Fatalf("socket ended: %v", err)
	}
}

// Refused frames and the closes that end sockets are counted, and the engine's lost
// commit races are exposed, on /metrics.
func TestDriverRefusalsAreCounted(t *testing.T) {
	s := mustServe(t, "--match-interval", "0")
	d := mustRawDial(t, s, "d-1")
	d.write(t, `{"type":"arrived","ride_id":"r_nope"}`)
	d.write(t, `{"type":"accept","offer_id":"o_nope"}`)
	d.write(t, `{"type":"location",`)
	for range 3 {
		if m := d.next(t); m.Type != driver.TypeError {
			t.Fatalf("answered %s, want an error frame", m.Raw)
		}
	}
	big := mustRawDial(t, s, "d-2")
	big.write(t, `{"type":"location","lat":1,"lng":1,"ref":"`+strings.Repeat("x", 5000)+`"}`)
	bad := mustRawDial(t, s, "d-3")
	bad.write(t, "{\"type\":\"offline\",\"ref\":\"\xff\"}")
	flood := mustRawDial(t, s, "d-4")
	for range 20000 {
		if flood.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(frameWait)) != nil {
			break
		}
	}
	for name, c := range map[string]*rawDriver{"oversized": big, "invalid UTF-8": bad, "ping flood": flood} {
		if err := c.sync(t, "x"); closeCode(err) == 0 {
			t.Fatalf("%s: %v, want a close", name, err)
		}
	}
	want := map[string]float64{
		`understudy_driver_frames_refused_total{code="not_found",type="arrived"}`: 1,
		`understudy_driver_frames_refused_total{code="conflict",type="accept"}`:   1,
		`understudy_driver_frames_refused_total{code="invalid",type="invalid"}`:   2, // bad JSON, bad UTF-8
		`understudy_driver_frames_refused_total{code="too_large",type="invalid"}`: 1,
		`understudy_driver_frames_refused_total{code="rate_limited",type="ping"}`: 1,
		`understudy_driver_closes_total{code="1007"}`:                             1,
		`understudy_driver_closes_total{code="1008"}`:                             1,
		`understudy_driver_closes_total{code="1009"}`:                             1,
		`understudy_dispatch_conflicts_total`:                                     0,
	}
	dispatchtest.Eventually(t, func() error {
		_, body := get(t, "http://"+s.Addr()+"/metrics")
		var missing []string
		for series, v := range want {
			if got, ok := sample(body, series); !ok || got != v {
				missing = append(missing, fmt.Sprintf("%s = %v (present %v), want %v", series, got, ok, v))
			}
		}
		if len(missing) > 0 {
			return errors.New(strings.Join(missing, "; "))
		}
		return nil
	})
}

// sample finds series (name and labels exactly as exposed) in a /metrics body.
func sample(body, series string) (float64, bool) {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, err == nil
}
