package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
	"github.com/understudy/understudy/dispatch/jwtauth"
	"github.com/understudy/understudy/driver"
	"github.com/understudy/understudy/driver/client"
	"github.com/understudy/understudy/driver/drivertest"
)

// Places in central Seoul: the pickup, a driver next to it and one 500 m away.
var (
	pickup  = dispatch.Point{Lat: 37.5665, Lng: 126.9780}
	dropoff = dispatch.Point{Lat: 37.5512, Lng: 126.9882}
	near    = dispatch.Point{Lat: 37.5668, Lng: 126.9783}
	farther = dispatch.Point{Lat: 37.5700, Lng: 126.9820}
)

// frameWait is how long a test waits for a frame or a send: generous, as a correctness
// test must not fail because the machine is busy.
const frameWait = dispatchtest.Patience

func driverURL(s *server) string { return "ws://" + s.Addr() + driver.Path }

func mustToken(tb testing.TB, s *server, sub string, role dispatch.Role) string {
	tb.Helper()
	tok, err := s.keys.Sign(dispatch.Identity{Subject: sub, Role: role}, time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// mustDial connects driver sub with d, closes it at cleanup, and returns it with its
// welcome frame read.
func mustDial(tb testing.TB, s *server, sub string, d client.Dialer) (*client.Client, driver.Message) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), frameWait)
	defer cancel()
	c, err := d.Dial(ctx, driverURL(s), mustToken(tb, s, sub, dispatch.RoleDriver))
	if err != nil {
		tb.Fatalf("dial %s: %v", sub, err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c, drivertest.Next(tb, c, driver.TypeWelcome)
}

// mustOnline connects driver sub at p and makes it available.
func mustOnline(tb testing.TB, s *server, sub string, p dispatch.Point) *client.Client {
	tb.Helper()
	c, w := mustDial(tb, s, sub, client.Dialer{})
	if w.DriverID != sub || w.State != dispatch.DriverOffline {
		tb.Fatalf("welcome = %s, want driver %s offline", w.Raw, sub)
	}
	send(tb, c.Location(ctx(tb), p))
	send(tb, c.Available(ctx(tb)))
	if a := drivertest.Next(tb, c, driver.TypeAck); a.Ref != driver.TypeAvailable {
		tb.Fatalf("ack = %s, want ref available", a.Raw)
	}
	return c
}

func ctx(tb testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), frameWait)
	tb.Cleanup(cancel)
	return c
}

func send(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatalf("send: %v", err)
	}
}

func request(tb testing.TB, s *server, rider string) dispatch.Ride {
	tb.Helper()
	r, err := s.engine.Riders().RequestRide(context.Background(), rider, pickup, dropoff)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

func TestDriverTripEndToEnd(t *testing.T) {
	s := mustServe(t, "--match-interval", "0")
	d1 := mustOnline(t, s, "d-1", near)
	d2 := mustOnline(t, s, "d-2", farther)
	ride := request(t, s, "u-1")

	// The nearest driver is offered the ride; it declines, and the offer cascades.
	o1 := drivertest.Next(t, d1, driver.TypeOffer)
	if o1.RideID != ride.ID || o1.OfferID == "" || *o1.Pickup != pickup || *o1.Dropoff != dropoff ||
		*o1.Fare != ride.Fare || !o1.ExpiresAt.After(time.Now()) {
		t.Fatalf("offer = %s, want ride %s from %v to %v for %v", o1.Raw, ride.ID, pickup, dropoff, ride.Fare)
	}
	var raw map[string]any
	_ = json.Unmarshal(o1.Raw, &raw)
	for _, field := range []string{"offer_id", "ride_id", "pickup", "dropoff", "fare", "expires_at"} {
		if _, ok := raw[field]; !ok {
			t.Errorf("offer frame lacks %q: %s", field, o1.Raw)
		}
	}
	if _, err := time.Parse(time.RFC3339, raw["expires_at"].(string)); err != nil {
		t.Errorf("expires_at is not RFC 3339: %v", err)
	}
	send(t, d1.Decline(ctx(t), o1.OfferID))
	drivertest.Next(t, d1, driver.TypeAck)
	o2 := drivertest.Next(t, d2, driver.TypeOffer)
	if o2.RideID != ride.ID || o2.OfferID == o1.OfferID {
		t.Fatalf("second offer = %s, want a new offer of ride %s", o2.Raw, ride.ID)
	}

	// The second driver accepts and drives the trip.
	send(t, d2.Accept(ctx(t), o2.OfferID))
	a := drivertest.Next(t, d2, driver.TypeAssigned)
	if r := a.Ride; r == nil || r.ID != ride.ID || r.Status != dispatch.RideMatched || r.RiderID != "u-1" ||
		r.Driver == nil || r.Driver.ID != "d-2" || r.Driver.Location == nil || *r.Driver.Location != farther {
		t.Fatalf("assigned = %s, want ride %s matched to d-2 at %v", a.Raw, ride.ID, farther)
	}
	for _, step := range []struct {
		send func(context.Context, string) error
		want dispatch.RideStatus
	}{
		{d2.Arrived, dispatch.RideArrived},
		{d2.Start, dispatch.RideInProgress},
		{d2.Complete, dispatch.RideCompleted},
	} {
		send(t, step.send(ctx(t), ride.ID))
		m := drivertest.Next(t, d2, driver.TypeRide)
		if m.Ride == nil || m.Ride.Status != step.want {
			t.Fatalf("ride frame = %s, want status %s", m.Raw, step.want)
		}
	}
	if r, err := s.engine.Riders().Ride(context.Background(), ride.ID); err != nil || r.Status != dispatch.RideCompleted || r.DriverID != "d-2" {
		t.Fatalf("stored ride = %+v %v, want completed by d-2", r, err)
	}
	if d, err := s.engine.Riders().Driver(context.Background(), "d-2"); err != nil || d.State != dispatch.DriverAvailable {
		t.Fatalf("d-2 after the trip = %+v %v, want available", d, err)
	}

	_, body := get(t, "http://"+s.Addr()+"/metrics")
	for _, want := range []string{
		"understudy_driver_connected 2",
		`understudy_driver_frames_in_total{type="accept"} 1`,
		`understudy_driver_frames_out_total{type="offer"} 2`,
		`understudy_driver_frames_out_total{type="welcome"} 2`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestDriverResumeMidOffer: a driver whose socket drops while it holds an offer
// reconnects within the grace period, hears the offer again and accepts it.
func TestDriverResumeMidOffer(t *testing.T) {
	s := mustServe(t, "--match-interval", "0")
	c, _ := mustDial(t, s, "d-1", client.Dialer{Reconnect: true, MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	send(t, c.Location(ctx(t), near))
	send(t, c.Available(ctx(t)))
	drivertest.Next(t, c, driver.TypeAck)
	ride := request(t, s, "u-1")
	o := drivertest.Next(t, c, driver.TypeOffer)

	c.Drop()
	w := drivertest.Next(t, c, driver.TypeWelcome)
	if w.State != dispatch.DriverOffered || !w.Resumed || w.Ride != nil {
		t.Fatalf("welcome after drop = %s, want offered, resumed, no ride", w.Raw)
	}
	again := drivertest.Next(t, c, driver.TypeOffer)
	if again.OfferID != o.OfferID || again.RideID != ride.ID || !again.ExpiresAt.Equal(o.ExpiresAt) {
		t.Fatalf("redelivered offer = %s, want %s", again.Raw, o.Raw)
	}
	send(t, c.Accept(ctx(t), o.OfferID))
	if a := drivertest.Next(t, c, driver.TypeAssigned); a.Ride.ID != ride.ID {
		t.Fatalf("assigned = %s", a.Raw)
	}
}

// TestDriverResumeAfterOfferExpired: the offer the app heard of before the drop
// expired meanwhile, so the resumed socket hears offer_revoked for it.
func TestDriverResumeAfterOfferExpired(t *testing.T) {
	s := mustServe(t, "--match-interval", "0", "--offer-timeout", "200ms")
	c := mustOnline(t, s, "d-1", near)
	ride := request(t, s, "u-1")
	o := drivertest.Next(t, c, driver.TypeOffer)
	c.Drop()
	dispatchtest.Eventually(t, func() error {
		r, err := s.engine.Riders().Ride(context.Background(), ride.ID)
		if err == nil && r.Offer != nil {
			err = fmt.Errorf("ride %s still has offer %s, past its 200 ms", ride.ID, r.Offer.ID)
		}
		return err
	})

	c2, w := mustDial(t, s, "d-1", client.Dialer{})
	if w.State != dispatch.DriverAvailable || !w.Resumed {
		t.Fatalf("welcome = %s, want available, resumed", w.Raw)
	}
	if r := drivertest.Next(t, c2, driver.TypeOfferRevoked); r.OfferID != o.OfferID || r.Reason != dispatch.ReasonExpired {
		t.Fatalf("offer_revoked = %s, want %s expired", r.Raw, o.OfferID)
	}
}

// TestDriverSilentGoesOffline: a connected driver that lets offers in a row expire is
// taken offline and told so with a state frame; the rides go on searching.
func TestDriverSilentGoesOffline(t *testing.T) {
	s := mustServe(t, "--match-interval", "0", "--offer-timeout", "150ms", "--max-missed-offers", "2")
	c := mustOnline(t, s, "d-1", near)
	request(t, s, "u-1")
	request(t, s, "u-2")
	for range 2 {
		o := drivertest.Next(t, c, driver.TypeOffer)
		if r := drivertest.Next(t, c, driver.TypeOfferRevoked); r.OfferID != o.OfferID || r.Reason != dispatch.ReasonExpired {
			t.Fatalf("offer_revoked = %s, want %s expired", r.Raw, o.OfferID)
		}
	}
	st := drivertest.Next(t, c, driver.TypeState)
	if st.State != dispatch.DriverOffline || st.Reason != dispatch.ReasonMissedOffers {
		t.Fatalf("state frame = %s, want offline for missed_offers", st.Raw)
	}
	if d, err := s.engine.Riders().Driver(context.Background(), "d-1"); err != nil || d.State != dispatch.DriverOffline {
		t.Fatalf("driver = %+v %v, want offline", d, err)
	}
}

// TestDriverResumeMidTrip: a driver that drops after arriving resumes with its ride in
// the welcome and carries on.
func TestDriverResumeMidTrip(t *testing.T) {
	s := mustServe(t, "--match-interval", "0")
	c := mustOnline(t, s, "d-1", near)
	ride := request(t, s, "u-1")
	o := drivertest.Next(t, c, driver.TypeOffer)
	send(t, c.Accept(ctx(t), o.OfferID))
	drivertest.Next(t, c, driver.TypeAssigned)
	send(t, c.Arrived(ctx(t), ride.ID))
	drivertest.Next(t, c, driver.TypeRide)
	c.Drop()

	c2, w := mustDial(t, s, "d-1", client.Dialer{})
	if w.State != dispatch.DriverEnRoute || !w.Resumed || w.Ride == nil || w.Ride.ID != ride.ID ||
		w.Ride.Status != dispatch.RideArrived || w.Ride.Driver == nil || w.Ride.Driver.ID != "d-1" {
		t.Fatalf("welcome = %s, want en_route with ride %s arrived", w.Raw, ride.ID)
	}
	send(t, c2.Start(ctx(t), ride.ID))
	if m := drivertest.Next(t, c2, driver.TypeRide); m.Ride.Status != dispatch.RideInProgress {
		t.Fatalf("after start: %s", m.Raw)
	}
}

func TestDriverSecondConnectionReplacesFirst(t *testing.T) {
	s := mustServe(t, "--match-interval", "0")
	first := mustOnline(t, s, "d-1", near)
	second, w := mustDial(t, s, "d-1", client.Dialer{})
	if w.State != dispatch.DriverAvailable || !w.Resumed {
		t.Fatalf("second welcome = %s, want available, resumed", w.Raw)
	}
	ce := drivertest.CloseError(t, first)
	if ce.Code != driver.CloseReplaced || ce.Text != "replaced by a newer connection" {
		t.Fatalf("first socket closed with %d %q, want %d", ce.Code, ce.Text, driver.CloseReplaced)
	}
	// The newer socket gets the driver's offers.
	ride := request(t, s, "u-1")
	if o := drivertest.Next(t, second, driver.TypeOffer); o.RideID != ride.ID {
		t.Fatalf("offer = %s", o.Raw)
	}
}

// handshake makes a raw websocket handshake request and returns the status, content
// type and problem code.
func handshake(tb testing.TB, s *server, header http.Header) (int, string, string) {
	tb.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+s.Addr()+driver.Path, nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	for k, v := range header {
		req.Header[k] = v
	}
	hc := openAPIClient(tb)
	hc.Timeout = frameWait
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return resp.StatusCode, "", ""
	}
	var p struct {
		Code string `json:"code"`
	}
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &p)
	return resp.StatusCode, resp.Header.Get("Content-Type"), p.Code
}

func TestDriverHandshakeRefusals(t *testing.T) {
	s := mustServe(t, "--allowed-origin", "https://app.example")
	forged, _ := (&jwtauth.Keys{Secret: []byte("another-secret-0123456789")}).Sign(dispatch.Identity{Subject: "d-1", Role: dispatch.RoleDriver}, time.Hour)
	past := &jwtauth.Keys{Secret: s.keys.current().Secret, Now: func() time.Time { return time.Now().Add(-2 * time.Hour) }}
	expired, _ := past.Sign(dispatch.Identity{Subject: "d-1", Role: dispatch.RoleDriver}, time.Hour)
	good := mustToken(t, s, "d-1", dispatch.RoleDriver)
	for _, c := range []struct {
		name   string
		header http.Header
		status int
		code   string
	}{
		{"no token", nil, 401, "unauthorized"},
		{"forged token", http.Header{"Authorization": {"Bearer " + forged}}, 401, "unauthorized"},
		{"expired token", http.Header{"Authorization": {"Bearer " + expired}}, 401, "unauthorized"},
		{"garbage token", http.Header{"Authorization": {"Bearer not.a.jwt"}}, 401, "unauthorized"},
		{"basic auth", http.Header{"Authorization": {"Basic ZDox"}}, 401, "unauthorized"},
		{"forged subprotocol", http.Header{"Sec-Websocket-Protocol": {"bearer." + forged}}, 401, "unauthorized"},
		{"rider token", http.Header{"Authorization": {"Bearer " + mustToken(t, s, "u-1", dispatch.RoleRider)}}, 403, "forbidden"},
		{"admin token", http.Header{"Authorization": {"Bearer " + mustToken(t, s, "a-1", dispatch.RoleAdmin)}}, 403, "forbidden"},
		{"foreign origin", http.Header{"Authorization": {"Bearer " + good}, "Origin": {"https://evil.example"}}, 403, "forbidden"},
		{"not a websocket", http.Header{"Authorization": {"Bearer " + good}, "Upgrade": {"h2c"}}, 400, "invalid"},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, ctype, code := handshake(t, s, c.header)
			if status != c.status || ctype != "application/problem+json" || code != c.code {
				t.Fatalf("handshake = %d %q code %q, want %d problem+json code %q", status, ctype, code, c.status, c.code)
			}
		})
	}

	// The Go client reports the refusal.
	_, err := client.Dial(ctx(t), driverURL(s), mustToken(t, s, "u-1", dispatch.RoleRider))
	var he *client.HandshakeError
	if !errors.As(err, &he) || he.Status != 403 || he.Code != dispatch.ECodeForbidden {
		t.Fatalf("client dial with a rider token: %v, want 403 forbidden", err)
	}
}

func TestDriverOriginsAllowed(t *testing.T) {
	s := mustServe(t, "--allowed-origin", "https://app.example")
	for _, origin := range []string{"", "https://app.example", "http://" + s.Addr()} {
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		_, w := mustDial(t, s, "d-1", client.Dialer{Header: h})
		if w.DriverID != "d-1" {
			t.Fatalf("origin %q: welcome %s", origin, w.Raw)
		}
	}
}

func TestDriverBearerSubprotocol(t *testing.T) {
	s := mustServe(t)
	tok := mustToken(t, s, "d-7", dispatch.RoleDriver)
	c, err := client.Dialer{Subprotocol: true}.Dial(ctx(t), driverURL(s), tok)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if w := drivertest.Next(t, c, driver.TypeWelcome); w.DriverID != "d-7" {
		t.Fatalf("welcome = %s", w.Raw)
	}
	if got := c.Subprotocol(); got != "bearer."+tok {
		t.Fatalf("server chose subprotocol %q, want the offered bearer one", got)
	}
}

// TestDriverBadFrames: each malformed, unknown or out-of-range frame, and each frame
// the engine refuses, gets an error frame, and the socket lives on.
func TestDriverBadFrames(t *testing.T) {
	s := mustServe(t, "--match-interval", "0")
	c := mustOnline(t, s, "d-1", near)
	for _, tc := range []struct {
		name  string
		frame string
		code  dispatch.ECode
		ref   string
	}{
		{"bad JSON", `{"type":"location",`, dispatch.ECodeInvalid, ""},
		{"not an object", `[1,2]`, dispatch.ECodeInvalid, ""},
		{"no type", `{"lat":1}`, dispatch.ECodeInvalid, ""},
		{"unknown type", `{"type":"teleport"}`, dispatch.ECodeInvalid, "teleport"},
		{"latitude 91", `{"type":"location","lat":91,"lng":0,"ref":"l1"}`, dispatch.ECodeInvalid, "l1"},
		{"longitude -181", `{"type":"location","lat":0,"lng":-181}`, dispatch.ECodeInvalid, "location"},
		{"lat as a string", `{"type":"location","lat":"37.5","lng":127}`, dispatch.ECodeInvalid, ""},
		{"missing lng", `{"type":"location","lat":37.5}`, dispatch.ECodeInvalid, "location"},
		{"heading 400", `{"type":"location","lat":37.5,"lng":127,"heading":400}`, dispatch.ECodeInvalid, "location"},
		{"bad ts", `{"type":"location","lat":37.5,"lng":127,"ts":"yesterday"}`, dispatch.ECodeInvalid, ""},
		{"accept without offer_id", `{"type":"accept","ref":"a1"}`, dispatch.ECodeInvalid, "a1"},
		{"unknown offer id", `{"type":"accept","offer_id":"o_nope","ref":"a2"}`, dispatch.ECodeConflict, "a2"},
		{"decline unknown offer", `{"type":"decline","offer_id":"o_nope"}`, dispatch.ECodeConflict, "decline"},
		{"unknown ride", `{"type":"arrived","ride_id":"r_nope"}`, dispatch.ECodeNotFound, "arrived"},
		{"complete without ride_id", `{"type":"complete"}`, dispatch.ECodeInvalid, "complete"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			send(t, c.SendRaw(ctx(t), websocket.TextMessage, []byte(tc.frame)))
			e := drivertest.Next(t, c, driver.TypeError)
			if e.Code != tc.code || e.Ref != tc.ref || e.Message == "" {
				t.Fatalf("error frame = %s, want code %s ref %q", e.Raw, tc.code, tc.ref)
			}
			if strings.Contains(e.Message, "driver.Frame") || strings.Contains(e.Message, "float64") {
				t.Errorf("message leaks Go types: %q", e.Message)
			}
		})
	}
	send(t, c.SendRaw(ctx(t), websocket.BinaryMessage, []byte{1, 2, 3}))
	if e := drivertest.Next(t, c, driver.TypeError); e.Code != dispatch.ECodeInvalid {
		t.Fatalf("binary frame: %s", e.Raw)
	}
	// Still alive and still the same driver.
	send(t, c.Send(ctx(t), driver.Frame{Type: driver.TypeLocation, Lat: &farther.Lat, Lng: &farther.Lng, Ref: "alive"}))
	if a := drivertest.Next(t, c, driver.TypeAck); a.Ref != "alive" {
		t.Fatalf("ack = %s", a.Raw)
	}
}

func TestDriverOversizedFrameCloses1009(t *testing.T) {
	s := mustServe(t)
	c, _ := mustDial(t, s, "d-1", client.Dialer{})
	big := `{"type":"location","lat":1,"lng":1,"ref":"` + strings.Repeat("x", 8<<10) + `"}`
	// The server may close before the last fragment is out, failing the send.
	_ = c.SendRaw(ctx(t), websocket.TextMessage, []byte(big))
	if ce := drivertest.CloseError(t, c); ce.Code != websocket.CloseMessageTooBig {
		t.Fatalf("closed with %d %q, want 1009", ce.Code, ce.Text)
	}
}

func TestDriverFloodCloses1008(t *testing.T) {
	s := mustServe(t)
	c, _ := mustDial(t, s, "d-1", client.Dialer{})
	frame := []byte(`{"type":"location","lat":37.5,"lng":127}`)
	for i := 0; i < 500; i++ {
		if err := c.SendRaw(ctx(t), websocket.TextMessage, frame); err != nil {
			break // the server closed the socket under us
		}
	}
	if ce := drivertest.CloseError(t, c); ce.Code != websocket.ClosePolicyViolation {
		t.Fatalf("closed with %d %q, want 1008", ce.Code, ce.Text)
	}
}

// TestDriverDrainOnShutdown: stopping the server tells connected drivers to reconnect
// with close 1012 and returns within the shutdown deadline.
func TestDriverDrainOnShutdown(t *testing.T) {
	runCtx, stop := context.WithCancel(context.Background())
	defer stop()
	got := make(chan *server, 1)
	done := make(chan error, 1)
	go func() {
		done <- serve(runCtx, []string{"--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--shutdown-timeout", "3s"},
			io.Discard, io.Discard, func(s *server) { got <- s })
	}()
	var s *server
	select {
	case s = <-got:
	case err := <-done:
		t.Fatal(err)
	}
	var clients []*client.Client
	for _, id := range []string{"d-1", "d-2", "d-3"} {
		c, _ := mustDial(t, s, id, client.Dialer{})
		clients = append(clients, c)
	}
	began := time.Now()
	stop()
	for _, c := range clients {
		if ce := drivertest.CloseError(t, c); ce.Code != websocket.CloseServiceRestart {
			t.Fatalf("closed with %d %q, want 1012", ce.Code, ce.Text)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(frameWait):
		t.Fatal("serve did not return after drain")
	}
	if d := time.Since(began); d > 3*time.Second {
		t.Fatalf("shutdown took %s, over its 3 s deadline", d)
	}
}

// TestDriverAcceptRaces races accepts against the rider's cancel and against the
// offer's expiry. Exactly one side wins each race, and the driver hears exactly one of
// assigned and offer_revoked for the offer.
func TestDriverAcceptRaces(t *testing.T) {
	// Lost expiry races count as missed offers; under load three in a row would take
	// the driver offline, which this test is not about.
	s := mustServe(t, "--match-interval", "0", "--offer-timeout", "150ms", "--max-missed-offers", "0")
	c := mustOnline(t, s, "d-1", near)
	outcomes := map[string]int{}
	for i := 0; i < 16; i++ {
		rider := "u-" + string(rune('a'+i))
		ride := request(t, s, rider)
		o := drivertest.Next(t, c, driver.TypeOffer)
		expiry := i%2 == 1
		kind := "cancel"
		if expiry {
			kind = "expiry"
		}
		var wg sync.WaitGroup
		if expiry {
			// Aim the accept at the expiry, a little before or after it.
			skew := time.Duration(i%4-2) * 5 * time.Millisecond
			<-time.After(time.Until(o.ExpiresAt.Add(skew)))
		} else {
			// Start the cancel a little before or after the accept leaves.
			skew := time.Duration(i%8) * 250 * time.Microsecond
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-time.After(skew)
				if _, err := s.engine.Riders().CancelRide(context.Background(), ride.ID); err != nil {
					t.Errorf("cancel: %v", err)
				}
			}()
		}
		send(t, c.Accept(ctx(t), o.OfferID))
		wg.Wait()
		if expiry {
			dispatchtest.Eventually(t, func() error {
				r, err := s.engine.Riders().Ride(context.Background(), ride.ID)
				if err == nil && r.Offer != nil && r.Offer.ID == o.OfferID {
					err = fmt.Errorf("race %d: offer %s neither answered nor expired", i, o.OfferID)
				}
				return err
			})
		}
		// A ref'd location is answered after every frame the races queued.
		send(t, c.Send(ctx(t), driver.Frame{Type: driver.TypeLocation, Lat: &near.Lat, Lng: &near.Lng, Ref: "sync"}))
		// The ack answers every frame the socket's reader handled before it, but an
		// outcome decided by the matching loop (an expiry) is committed there and sent
		// just after: when the ack comes first, wait on for the outcome.
		var assigned, revoked, cancelled int
		var frames []string
		synced := false
		deadline := time.After(drivertest.Wait)
	collect:
		for !synced || assigned+revoked == 0 {
			var m driver.Message
			select {
			case m = <-c.Frames():
			case <-deadline:
				break collect
			}
			frames = append(frames, string(m.Raw))
			switch {
			case m.Type == driver.TypeAssigned && m.Ride.ID == ride.ID:
				assigned++
			case m.Type == driver.TypeOfferRevoked && m.OfferID == o.OfferID:
				revoked++
			case m.Type == driver.TypeRideCancelled && m.RideID == ride.ID:
				cancelled++
			case m.Type == driver.TypeAck && m.Ref == "sync":
				synced = true
			}
		}
		if assigned+revoked != 1 {
			t.Fatalf("race %d: driver heard %d assigned and %d offer_revoked: %s", i, assigned, revoked, frames)
		}
		r, err := s.engine.Riders().Ride(context.Background(), ride.ID)
		if err != nil {
			t.Fatalf("race %d: %v", i, err)
		}
		if assigned == 1 {
			outcomes[kind+": accept won"]++
			if r.MatchedAt.IsZero() || r.DriverID != "d-1" {
				t.Fatalf("race %d: driver heard assigned but the ride is %+v", i, r)
			}
			if !expiry {
				if cancelled != 1 { // the cancel came second
					t.Fatalf("race %d: accept won, then the rider cancelled, but the driver heard: %s", i, frames)
				}
			} else {
				send(t, c.Arrived(ctx(t), ride.ID))
				drivertest.Next(t, c, driver.TypeRide)
				send(t, c.Start(ctx(t), ride.ID))
				drivertest.Next(t, c, driver.TypeRide)
				send(t, c.Complete(ctx(t), ride.ID))
				drivertest.Next(t, c, driver.TypeRide)
			}
		} else {
			outcomes[kind+": accept lost"]++
			if !r.MatchedAt.IsZero() {
				t.Fatalf("race %d: driver heard offer_revoked but the ride was matched: %+v", i, r)
			}
			if r.Status == dispatch.RideSearching {
				if _, err := s.engine.Riders().CancelRide(context.Background(), ride.ID); err != nil {
					t.Fatalf("race %d: cancel the ride left searching: %v", i, err)
				}
			}
		}
		dispatchtest.Eventually(t, func() error {
			d, err := s.engine.Riders().Driver(context.Background(), "d-1")
			if err == nil && d.State != dispatch.DriverAvailable {
				err = fmt.Errorf("race %d: d-1 is %s, want available again", i, d.State)
			}
			return err
		})
	}
	t.Logf("outcomes: %v", outcomes)
}
