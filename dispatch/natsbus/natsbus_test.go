package natsbus_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
	"github.com/understudy/understudy/dispatch/memstore"
	"github.com/understudy/understudy/dispatch/natsbus"
	"github.com/understudy/understudy/dispatch/natslog"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder keeps the events it is given; it serves as both an Engine and a Notifier.
// peers are the peer events; order names every event, of both kinds, as heard.
type recorder struct {
	mu    sync.Mutex
	evs   []dispatch.Event
	peers []dispatch.PeerEvent
	order []heard
}

// heard is one event a recorder heard: a client event, or a peer event (peer set).
type heard struct {
	peer     bool
	typ      string
	driverID string
}

func (r *recorder) Notify(ev dispatch.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, ev)
	r.order = append(r.order, heard{typ: string(ev.Type), driverID: ev.DriverID})
}
func (r *recorder) Observe(ev dispatch.Event) { r.Notify(ev) }
func (r *recorder) Apply(ev dispatch.PeerEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.peers = append(r.peers, ev)
	r.order = append(r.order, heard{peer: true, typ: string(ev.Type), driverID: ev.DriverID})
}

func (r *recorder) peerEvents() []dispatch.PeerEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]dispatch.PeerEvent(nil), r.peers...)
}

func (r *recorder) heardInOrder() []heard {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]heard(nil), r.order...)
}

func (r *recorder) events() []dispatch.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]dispatch.Event(nil), r.evs...)
}

// heard fails unless r has at least n events.
func (r *recorder) heard(name string, n int) error {
	if got := len(r.events()); got < n {
		return fmt.Errorf("%s heard %d events, want %d", name, got, n)
	}
	return nil
}

// available fails unless e's supply holds n drivers.
func available(e *dispatch.Engine, n int) error {
	if got := e.Available(); got != n {
		return fmt.Errorf("%d drivers in the supply, want %d", got, n)
	}
	return nil
}

// mustStartNATS starts an embedded NATS server for tb and returns its URL.
func mustStartNATS(tb testing.TB) string {
	tb.Helper()
	emb, err := natslog.StartEmbedded(tb.TempDir(), "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(emb.Close)
	return emb.URL()
}

type testBus struct {
	*natsbus.Bus
	engine, local *recorder
}

// mustOpenBus connects a bus of region to url, runs it, and stops it at cleanup.
func mustOpenBus(tb testing.TB, url, region string, tune func(*natsbus.Bus)) *testBus {
	tb.Helper()
	b := newBus(tb, url, region)
	if tune != nil {
		tune(b.Bus)
	}
	b.start(tb)
	return b
}

// newBus connects a bus of region to url, with recorders as its Engine and Local.
func newBus(tb testing.TB, url, region string) *testBus {
	tb.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		tb.Fatal(err)
	}
	b := &testBus{engine: &recorder{}, local: &recorder{}}
	b.Bus = &natsbus.Bus{Conn: nc, Region: region, Engine: b.engine, Local: b.local}
	return b
}

// start opens b and closes it at cleanup.
func (b *testBus) start(tb testing.TB) {
	tb.Helper()
	nc := b.Conn
	if err := b.Open(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := b.Close(); err != nil {
			tb.Errorf("close: %v", err)
		}
		nc.Close()
	})
	// Both ends are subscribed once a round trip to the server completes.
	if err := nc.Flush(); err != nil {
		tb.Fatal(err)
	}
}

var (
	gangnam = dispatch.Point{Lat: 37.4979, Lng: 127.0276}
	seoul   = dispatch.Point{Lat: 37.5547, Lng: 126.9707}
	t0      = time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)
)

func offerEvent(i int) dispatch.Event {
	r := dispatch.Ride{ID: fmt.Sprintf("r-%d", i), RiderID: "u-1", Status: dispatch.RideSearching,
		Pickup: gangnam, Dropoff: seoul, Fare: dispatch.Money{Amount: 4800, Currency: "KRW"},
		Declined: []string{"d-0"}, SearchDeadline: t0.Add(2 * time.Minute), CreatedAt: t0, UpdatedAt: t0, Version: 3}
	o := &dispatch.Offer{ID: fmt.Sprintf("o-%d", i), RideID: r.ID, DriverID: "d-1", Pickup: gangnam, Dropoff: seoul,
		Fare: r.Fare, PickupM: 120, CreatedAt: t0, ExpiresAt: t0.Add(15 * time.Second)}
	r.Offer = o
	return dispatch.Event{Type: dispatch.EventOffer, DriverID: "d-1", Ride: r, Offer: o, At: t0}
}

// A replica's events reach the other replicas of its region, whole and in order, and
// neither itself nor another region.
func TestEventsReachTheRegionsOtherReplicas(t *testing.T) {
	url := mustStartNATS(t)
	a := mustOpenBus(t, url, "seoul", nil)
	b := mustOpenBus(t, url, "seoul", nil)
	other := mustOpenBus(t, url, "busan", nil)

	const n = 500
	for i := range n {
		a.Forward(offerEvent(i))
	}
	dispatchtest.Eventually(t, func() error {
		return errors.Join(b.local.heard("B's gateway", n), b.engine.heard("B's engine", n))
	})
	for i, ev := range b.local.events() {
		want := offerEvent(i)
		if ev.Type != want.Type || ev.DriverID != want.DriverID || ev.Ride.ID != want.Ride.ID ||
			ev.Ride.Version != 3 || len(ev.Ride.Declined) != 1 || ev.Ride.Offer == nil ||
			ev.Offer == nil || ev.Offer.ID != want.Offer.ID || !ev.Offer.ExpiresAt.Equal(want.Offer.ExpiresAt) ||
			!ev.At.Equal(t0) || !ev.Ride.SearchDeadline.Equal(want.Ride.SearchDeadline) {
			t.Fatalf("event %d = %+v, want %+v", i, ev, want)
		}
	}
	// A round trip from each makes sure anything misrouted would have arrived.
	b.Forward(dispatch.Event{Type: dispatch.EventRideChanged, Ride: dispatch.Ride{ID: "r-b"}})
	dispatchtest.Eventually(t, func() error { return a.local.heard("A's gateway", 1) })
	if got := len(other.local.events()) + len(other.engine.events()); got != 0 {
		t.Fatalf("busan got %d of seoul's events", got)
	}
	if got := a.local.events()[0]; got.Ride.ID != "r-b" || len(a.engine.events()) != 1 {
		t.Fatalf("A heard %+v and its own events back: %d", got, len(a.engine.events()))
	}
}

// Supply and presence changes reach only the engines, the last per driver, presence
// first; away cancels an earlier supply change.
func TestSupplyChangesAreCoalescedPerDriver(t *testing.T) {
	url := mustStartNATS(t)
	a := mustOpenBus(t, url, "seoul", func(b *natsbus.Bus) { b.FlushInterval = 200 * time.Millisecond })
	b := mustOpenBus(t, url, "seoul", nil)

	a.Tell(dispatch.PeerEvent{Type: dispatch.PeerDriverConnected, DriverID: "d-1"})
	var last dispatch.Point
	for i := range 100 {
		last = dispatch.Point{Lat: gangnam.Lat + float64(i)*1e-5, Lng: gangnam.Lng}
		a.Tell(dispatch.PeerEvent{Type: dispatch.PeerSupply, DriverID: "d-1", Location: &last})
	}
	a.Tell(dispatch.PeerEvent{Type: dispatch.PeerSupply, DriverID: "d-2", Location: &gangnam})
	a.Tell(dispatch.PeerEvent{Type: dispatch.PeerDriverAway, DriverID: "d-2"})
	a.Tell(dispatch.PeerEvent{Type: dispatch.PeerSupply, DriverID: "d-3"})
	dispatchtest.Eventually(t, func() error {
		if got := len(b.engine.peerEvents()); got < 4 {
			return fmt.Errorf("B's engine heard %d peer events, want 4", got)
		}
		return nil
	})
	byDriver := map[string][]dispatch.PeerEvent{}
	for _, ev := range b.engine.peerEvents() {
		byDriver[ev.DriverID] = append(byDriver[ev.DriverID], ev)
	}
	d1 := byDriver["d-1"]
	if len(d1) != 2 || d1[0].Type != dispatch.PeerDriverConnected || d1[1].Type != dispatch.PeerSupply ||
		d1[1].Location == nil || *d1[1].Location != last {
		t.Fatalf("d-1 = %+v, want connected then its last location", d1)
	}
	if d2 := byDriver["d-2"]; len(d2) != 1 || d2[0].Type != dispatch.PeerDriverAway {
		t.Fatalf("d-2 = %+v, want away alone", d2)
	}
	if d3 := byDriver["d-3"]; len(d3) != 1 || d3[0].Type != dispatch.PeerSupply || d3[0].Location != nil {
		t.Fatalf("d-3 = %+v, want out of supply", d3)
	}
	if got := b.local.events(); len(got) != 0 {
		t.Fatalf("clients got replica events: %+v", got)
	}
}

// What the engine tells the bus before it opens (it opens after the engine) is sent
// once it does, and Close sends what is still queued: nothing is lost at either end.
func TestEventsAroundOpenAndCloseAreSent(t *testing.T) {
	url := mustStartNATS(t)
	b := mustOpenBus(t, url, "seoul", nil)
	a := newBus(t, url, "seoul")
	a.FlushInterval = time.Hour // supply changes go out only at Close
	a.Forward(offerEvent(0))
	a.Tell(dispatch.PeerEvent{Type: dispatch.PeerSupply, DriverID: "d-1", Location: &gangnam})
	if err := a.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	dispatchtest.Eventually(t, func() error { return b.local.heard("B's gateway", 1) })
	a.Tell(dispatch.PeerEvent{Type: dispatch.PeerDriverAway, DriverID: "d-2"})
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a.Forward(offerEvent(1)) // after Close: dropped
	dispatchtest.Eventually(t, func() error {
		if got := len(b.engine.heardInOrder()); got < 3 {
			return fmt.Errorf("B's engine heard %d events, want 3", got)
		}
		return nil
	})
	a.Conn.Close()
	got := map[string]int{}
	for _, h := range b.engine.heardInOrder() {
		got[h.typ+" "+h.driverID]++
	}
	if len(b.engine.heardInOrder()) != 3 || got[string(dispatch.EventOffer)+" d-1"] != 1 ||
		got[string(dispatch.PeerSupply)+" d-1"] != 1 || got[string(dispatch.PeerDriverAway)+" d-2"] != 1 {
		t.Fatalf("B's engine heard %+v, want the offer, d-1's supply and d-2 away", b.engine.heardInOrder())
	}
}

// Notify returns at once even when nothing sends (here: before Open): beyond MaxQueue
// it drops. What was queued before Open is sent once it opens. Messages are split to
// fit MaxMessageBytes, and order holds across them.
func TestNotifyNeverBlocksAndMessagesFit(t *testing.T) {
	url := mustStartNATS(t)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	a := &natsbus.Bus{Conn: nc, Region: "seoul", ID: "a", MaxQueue: 300, MaxMessageBytes: 4096}
	b := mustOpenBus(t, url, "seoul", nil)
	start := time.Now()
	for i := range 1000 {
		a.Forward(offerEvent(i)) // nothing sends: a is not open yet
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("1000 Notify calls took %s", took)
	}
	var big atomic.Int32
	sub, err := nc.Subscribe(natsbus.SubjectPrefix+"seoul.a", func(m *nats.Msg) {
		if len(m.Data) > 4096 {
			big.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil { // subscribed before a sends
		t.Fatal(err)
	}
	if err := a.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	dispatchtest.Eventually(t, func() error { return b.local.heard("B's gateway", 300) })
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	got := b.local.events()
	if len(got) != 300 {
		t.Fatalf("B got %d events, want the 300 that fit the queue", len(got))
	}
	for i, ev := range got {
		if ev.Ride.ID != fmt.Sprintf("r-%d", i) {
			t.Fatalf("event %d is ride %s: order lost", i, ev.Ride.ID)
		}
	}
	if n := big.Load(); n > 0 {
		t.Fatalf("%d messages over MaxMessageBytes", n)
	}
}

// Two engines on one Store, joined by buses: a driver online on A is offered a ride
// requested on B, A's clients hear B's offer, and B's hear A's accept.
func TestEnginesJoinedByTheBus(t *testing.T) {
	ctx := context.Background()
	url := mustStartNATS(t)
	store := memstore.New()
	replica := func() (*dispatch.Engine, *testBus) {
		b := newBus(t, url, "seoul")
		cfg := dispatch.DefaultConfig()
		cfg.MatchInterval = 0
		e := &dispatch.Engine{Store: store, Config: cfg, Notifier: b.local, Peers: b.Bus, Stepped: true}
		if err := e.Open(ctx); err != nil {
			t.Fatal(err)
		}
		b.Engine = e.Replicas()
		b.start(t)
		return e, b
	}
	ea, a := replica()
	eb, b := replica()
	if _, err := ea.Drivers().Connect(ctx, "d-1"); err != nil {
		t.Fatal(err)
	}
	if err := ea.Drivers().UpdateLocation(ctx, "d-1", gangnam); err != nil {
		t.Fatal(err)
	}
	if _, err := ea.Drivers().SetAvailable(ctx, "d-1"); err != nil {
		t.Fatal(err)
	}
	dispatchtest.Eventually(t, func() error { return available(eb, 1) })
	r, err := eb.Riders().RequestRide(ctx, "u-1", gangnam, seoul)
	if err != nil {
		t.Fatal(err)
	}
	if err := eb.Step(ctx); err != nil {
		t.Fatal(err)
	}
	offer := dispatchtest.Await(t, func() (*dispatch.Offer, error) {
		for _, ev := range a.local.events() {
			if ev.Type == dispatch.EventOffer && ev.DriverID == "d-1" {
				return ev.Offer, nil
			}
		}
		return nil, fmt.Errorf("no offer to d-1 among A's %d events", len(a.local.events()))
	})
	dispatchtest.Eventually(t, func() error { return available(ea, 0) })
	if _, err := ea.Drivers().Accept(ctx, "d-1", offer.ID); err != nil {
		t.Fatal(err)
	}
	dispatchtest.Eventually(t, func() error {
		for _, ev := range b.local.events() {
			if ev.Type == dispatch.EventRideChanged && ev.Ride.ID == r.ID && ev.Ride.Status == dispatch.RideMatched {
				return nil
			}
		}
		return fmt.Errorf("ride %s not matched in B's %d events", r.ID, len(b.local.events()))
	})
}

// BenchmarkNotifySupply is the engine's cost of telling the other replicas about one
// location update: a coalesced, queued supply change (sending runs on the bus's own
// goroutine).
func BenchmarkNotifySupply(b *testing.B) {
	url := mustStartNATS(b)
	bus := mustOpenBus(b, url, "seoul", nil)
	ids := make([]string, 10_000)
	for i := range ids {
		ids[i] = fmt.Sprintf("d-%05d", i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p := dispatch.Point{Lat: gangnam.Lat + float64(i%100)*1e-5, Lng: gangnam.Lng}
		bus.Tell(dispatch.PeerEvent{Type: dispatch.PeerSupply, DriverID: ids[i%len(ids)], Location: &p})
	}
}

// BenchmarkBusOffers is the bus's throughput: offers published by one replica until
// another has decoded them all (ns/op is per event).
func BenchmarkBusOffers(b *testing.B) {
	url := mustStartNATS(b)
	a := mustOpenBus(b, url, "seoul", func(bus *natsbus.Bus) { bus.MaxQueue = b.N + 1 })
	var got atomic.Int64
	count := dispatch.NotifierFunc(func(dispatch.Event) { got.Add(1) })
	mustOpenBus(b, url, "seoul", func(bus *natsbus.Bus) { bus.Local, bus.Engine = count, nil })
	ev := offerEvent(1)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 1; i <= b.N; i++ {
		a.Forward(ev)
		if i%1024 == 0 || i == b.N { // a window, so the receiver's pending limits hold
			dispatchtest.CheckFor(b, dispatchtest.Patience, time.Millisecond, func() error {
				if n := got.Load(); n != int64(i) {
					return fmt.Errorf("%d of %d offers heard", n, i)
				}
				return nil
			})
		}
	}
}

// Region names are one subject token each, whatever they hold: a long name used to
// make a subject over the server's control line limit (and the client then closed its
// connection for good), and "a.b" shared the bus of "a_b".
func TestRegionNamesAreOneSubjectToken(t *testing.T) {
	url := mustStartNATS(t)
	long := strings.Repeat("r", 5<<10)
	a := mustOpenBus(t, url, long, nil)
	b := mustOpenBus(t, url, long, nil)
	dotted := mustOpenBus(t, url, "a.b", nil)
	dotted2 := mustOpenBus(t, url, "a.b", nil)
	under := mustOpenBus(t, url, "a_b", nil)
	for _, bus := range []*testBus{a, b, dotted, dotted2, under} {
		if st := bus.Conn.Status(); st != nats.CONNECTED {
			t.Fatalf("bus of a %d-byte region: connection %s: %v", len(bus.Region), st, bus.Conn.LastError())
		}
		if n := len(bus.Subject()); n > 1024 {
			t.Fatalf("bus of a %d-byte region publishes on a %d-byte subject", len(bus.Region), n)
		}
	}
	a.Forward(offerEvent(1))
	dotted.Forward(offerEvent(2))
	dispatchtest.Eventually(t, func() error {
		if n, m := len(b.local.events()), len(dotted2.local.events()); n != 1 || m != 1 {
			return fmt.Errorf("the long region's other replica has %d events, a.b's has %d; want 1 each", n, m)
		}
		return nil
	})
	// A round trip on a_b makes sure a misrouted event would have arrived.
	under2 := mustOpenBus(t, url, "a_b", nil)
	under2.Forward(offerEvent(3))
	dispatchtest.Eventually(t, func() error {
		if evs := under.local.events(); len(evs) == 0 || evs[len(evs)-1].Ride.ID != "r-3" {
			return fmt.Errorf("a_b's replica has %d events and not r-3 last", len(evs))
		}
		return nil
	})
	if evs := under.local.events(); len(evs) != 1 {
		t.Fatalf("a_b heard %d events, want only r-3: the first is %s", len(evs), evs[0].Ride.ID)
	}
}
