package dispatch_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/memstore"
)

// region is several engine replicas of one region: one Store, one clock, and an
// in-process bus that hands each replica's events to the others' Replicas() in one
// order for all, as natsbus does over one NATS server. A replica marked dead neither
// sends nor receives.
type region struct {
	clock    *clock
	store    *memstore.Store
	replicas []*testEngine
	dead     []atomic.Bool

	mu         sync.Mutex
	fifo       []sent
	delivering bool
}

// sent is a client event, or a peer event (peer set), from replica from.
type sent struct {
	from int
	ev   dispatch.Event
	peer *dispatch.PeerEvent
}

// relay is replica from's Peers: it publishes on the region's bus.
type relay struct {
	rg   *region
	from int
}

func (r relay) Forward(ev dispatch.Event)  { r.rg.publish(sent{from: r.from, ev: ev}) }
func (r relay) Tell(ev dispatch.PeerEvent) { r.rg.publish(sent{from: r.from, peer: &ev}) }

// publish queues what replica s.from sent, and delivers the queue unless a caller
// further up the stack (or another goroutine) is delivering it already.
func (rg *region) publish(s sent) {
	from := s.from
	if rg.dead[from].Load() {
		return
	}
	rg.mu.Lock()
	rg.fifo = append(rg.fifo, s)
	if rg.delivering {
		rg.mu.Unlock()
		return
	}
	rg.delivering = true
	for len(rg.fifo) > 0 {
		s := rg.fifo[0]
		rg.fifo = rg.fifo[1:]
		rg.mu.Unlock()
		for j, other := range rg.replicas {
			switch {
			case j == s.from || rg.dead[j].Load():
			case s.peer != nil:
				other.Replicas().Apply(*s.peer)
			default:
				other.Replicas().Observe(s.ev)
			}
		}
		rg.mu.Lock()
	}
	rg.delivering = false
	rg.mu.Unlock()
}

func mustOpenRegion(tb testing.TB, n int, tune func(*dispatch.Config)) *region {
	tb.Helper()
	cfg := dispatch.DefaultConfig()
	if tune != nil {
		tune(&cfg)
	}
	rg := &region{clock: newClock(), store: memstore.New(), dead: make([]atomic.Bool, n)}
	for i := range n {
		te := &testEngine{clock: rg.clock, rec: &recorder{}, store: rg.store}
		te.Engine = &dispatch.Engine{Store: rg.store, Notifier: te.rec, Peers: relay{rg, i}, Stepped: true,
			Config: cfg, Now: rg.clock.Now}
		if err := te.Open(context.Background()); err != nil {
			tb.Fatalf("open replica %d: %v", i, err)
		}
		tb.Cleanup(func() { _ = te.Close() })
		rg.replicas = append(rg.replicas, te)
	}
	return rg
}

// kill makes replica i stop: no more steps, events or answers from it.
func (rg *region) kill(i int) { rg.dead[i].Store(true) }

// run advances the clock by d in steps of tick, stepping every live replica each time.
func (rg *region) run(tb testing.TB, d, tick time.Duration) {
	tb.Helper()
	for elapsed := time.Duration(0); elapsed < d; elapsed += tick {
		rg.clock.Advance(tick)
		for i, te := range rg.replicas {
			if !rg.dead[i].Load() {
				te.step(tb)
			}
		}
	}
}

// A driver online on one replica is in every replica's supply, and a ride requested on
// another is offered to it; away and back, it follows.
func TestReplicasShareSupply(t *testing.T) {
	ctx := context.Background()
	rg := mustOpenRegion(t, 2, nil)
	a, b := rg.replicas[0], rg.replicas[1]
	a.online(t, "d-1", near(gangnam, 200, 0))
	if a.Available() != 1 || b.Available() != 1 {
		t.Fatalf("available = %d on A, %d on B; want 1 on both", a.Available(), b.Available())
	}
	r := b.request(t, gangnam)
	b.step(t)
	if o := b.offerTo(t, "d-1"); o.RideID != r.ID {
		t.Fatalf("offer = %+v", o)
	}
	if a.Available() != 0 {
		t.Fatalf("A still lists the claimed driver")
	}
	if err := a.Drivers().Decline(ctx, "d-1", rideOffer(t, b, r.ID).ID); err != nil {
		t.Fatal(err)
	}
	if a.Available() != 1 || b.Available() != 1 {
		t.Fatalf("after decline: available = %d on A, %d on B", a.Available(), b.Available())
	}

	// Its app drops from A: nobody offers it anything, even when a ride frees it.
	a.Drivers().Disconnect("d-1")
	if b.Available() != 0 {
		t.Fatal("B still offers a driver whose app dropped from A")
	}
	if err := a.Drivers().UpdateLocation(ctx, "d-1", near(gangnam, 100, 0)); err != nil {
		t.Fatal(err)
	}
	if b.Available() != 0 {
		t.Fatal("a location update put the away driver back in B's supply")
	}
	// It reconnects to B: both offer it again.
	if _, err := b.Drivers().Connect(ctx, "d-1"); err != nil {
		t.Fatal(err)
	}
	if a.Available() != 1 || b.Available() != 1 {
		t.Fatalf("after reconnecting to B: available = %d on A, %d on B", a.Available(), b.Available())
	}
	// A's gateway ends the grace period of the old socket: the driver stays available.
	if d, err := a.Drivers().SetOffline(ctx, "d-1"); err != nil || d.State != dispatch.DriverAvailable {
		t.Fatalf("SetOffline on A for a driver now on B = %+v, %v", d, err)
	}
	if b.Available() != 1 {
		t.Fatal("the old replica's grace expiry took the driver out of supply")
	}
}

// A socket that times out on one replica after its driver reconnected to another does
// not make the region forget the driver: the replica holding it says so again.
func TestLateAwayFromOldReplicaIsContradicted(t *testing.T) {
	ctx := context.Background()
	rg := mustOpenRegion(t, 3, nil)
	a, b, c := rg.replicas[0], rg.replicas[1], rg.replicas[2]
	if _, err := a.Drivers().Connect(ctx, "d-1"); err != nil { // the old socket
		t.Fatal(err)
	}
	b.online(t, "d-1", gangnam)   // the new one
	a.Drivers().Disconnect("d-1") // the old socket times out only now
	for i, te := range []*testEngine{a, b, c} {
		if te.Available() != 1 {
			t.Fatalf("replica %d lost the driver to the old socket's late drop", i)
		}
	}
}

func rideOffer(tb testing.TB, te *testEngine, rideID string) *dispatch.Offer {
	tb.Helper()
	r, err := te.Riders().Ride(context.Background(), rideID)
	if err != nil || r.Offer == nil {
		tb.Fatalf("ride %s has no offer: %+v %v", rideID, r, err)
	}
	return r.Offer
}

// While its replica lives, a searching ride is not adopted by another, however long it
// searches; when the replica dies, another adopts it within two sweeps and offers it.
func TestSweepAdoptsOnlyOrphanedRides(t *testing.T) {
	rg := mustOpenRegion(t, 2, nil)
	a, b := rg.replicas[0], rg.replicas[1]
	r := a.request(t, gangnam) // nobody is near
	rg.run(t, 20*time.Second, 100*time.Millisecond)
	if a.Pending() != 1 || b.Pending() != 0 {
		t.Fatalf("pending = %d on A, %d on B; want the ride on A only", a.Pending(), b.Pending())
	}

	rg.kill(0)
	// B learns of a driver only now (after A's death), so the offer can only be B's.
	b.online(t, "d-1", near(gangnam, 300, 0))
	sweep := dispatch.DefaultConfig().SweepInterval
	var took time.Duration
	for ; took < 4*sweep; took += 100 * time.Millisecond {
		rg.run(t, 100*time.Millisecond, 100*time.Millisecond)
		if len(b.rec.take(dispatch.EventOffer, "d-1")) == 1 {
			break
		}
	}
	if took >= 3*sweep {
		t.Fatalf("B offered A's orphan after %s, want within 3 sweeps", took)
	}
	if got := rideOffer(t, b, r.ID); got.DriverID != "d-1" {
		t.Fatalf("offer = %+v", got)
	}
	t.Logf("orphan offered %s after its replica died (sweep %s)", took, sweep)
}

// An offer made by a replica that then died is expired by another one a grace period
// after ExpiresAt, and the ride cascades to the next driver there.
func TestSurvivorExpiresDeadReplicasOffer(t *testing.T) {
	ctx := context.Background()
	for _, heard := range []bool{true, false} {
		t.Run(fmt.Sprintf("heard_the_offer=%v", heard), func(t *testing.T) {
			rg := mustOpenRegion(t, 2, nil)
			a, b := rg.replicas[0], rg.replicas[1]
			b.online(t, "d-near", near(gangnam, 100, 0))
			b.online(t, "d-far", near(gangnam, 900, 0))
			if !heard {
				rg.kill(1) // B misses the offer; only its sweep can find it
			}
			r := a.request(t, gangnam)
			a.step(t)
			o := a.offerTo(t, "d-near")
			rg.kill(0)
			rg.dead[1].Store(false)

			// The survivor leaves the offer alone until it expired.
			rg.run(t, o.ExpiresAt.Sub(rg.clock.Now())-time.Millisecond, 100*time.Millisecond)
			if evs := b.rec.take(dispatch.EventOfferRevoked, "d-near"); len(evs) != 0 {
				t.Fatalf("revoked before it expired: %+v", evs)
			}
			start := rg.clock.Now()
			for rg.clock.Now().Sub(start) < 3*dispatch.DefaultConfig().SweepInterval {
				rg.run(t, 50*time.Millisecond, 50*time.Millisecond)
				if len(b.rec.take(dispatch.EventOffer, "d-far")) == 1 {
					break
				}
			}
			late := rg.clock.Now().Sub(o.ExpiresAt)
			limit := time.Second // the grace, and a tick
			if !heard {
				limit = dispatch.DefaultConfig().SweepInterval + time.Second
			}
			if late > limit {
				t.Fatalf("the ride went to the next driver %s after the offer expired, want within %s", late, limit)
			}
			if evs := b.rec.take(dispatch.EventOfferRevoked, "d-near"); len(evs) != 1 || evs[0].Reason != dispatch.ReasonExpired {
				t.Fatalf("revocations = %+v", evs)
			}
			if got := rideOffer(t, b, r.ID); got.DriverID != "d-far" {
				t.Fatalf("offer = %+v", got)
			}
			b.driverState(t, "d-near", dispatch.DriverAvailable)
			if _, err := b.Drivers().Accept(ctx, "d-far", rideOffer(t, b, r.ID).ID); err != nil {
				t.Fatal(err)
			}
			t.Logf("cascaded %s after the expiry", late)
		})
	}
}

// A dead replica's search ends as no_driver on the survivor.
func TestSurvivorEndsDeadReplicasSearch(t *testing.T) {
	rg := mustOpenRegion(t, 2, func(c *dispatch.Config) { c.MaxSearch = 10 * time.Second })
	a, b := rg.replicas[0], rg.replicas[1]
	r := a.request(t, gangnam)
	rg.kill(0)
	rg.run(t, 12*time.Second, 250*time.Millisecond)
	got := b.rideStatus(t, r.ID, dispatch.RideNoDriver)
	if late := got.EndedAt.Sub(r.SearchDeadline); late < 0 || late > time.Second {
		t.Fatalf("ended %s after the deadline", late)
	}
}

// Replicas that adopt the same orphan at once and match it concurrently make one offer.
func TestConcurrentAdoptersOfferOnce(t *testing.T) {
	rg := mustOpenRegion(t, 3, func(c *dispatch.Config) { c.Candidates = 4 })
	a := rg.replicas[0]
	for i := range 6 {
		rg.replicas[1+i%2].online(t, fmt.Sprintf("d-%d", i), near(gangnam, float64(100*(i+1)), 0))
	}
	// Stop announcing and matching on A before the rides are requested there.
	rg.kill(0)
	var rides []dispatch.Ride
	for range 3 {
		rides = append(rides, a.request(t, gangnam))
	}
	rg.clock.Advance(3 * dispatch.DefaultConfig().SweepInterval)
	var wg sync.WaitGroup
	for _, te := range rg.replicas[1:] {
		wg.Go(func() { te.step(t) })
	}
	wg.Wait()
	offers := 0
	byDriver := map[string]string{}
	for _, te := range rg.replicas[1:] {
		for _, ev := range te.rec.take(dispatch.EventOffer, "") {
			offers++
			if prev, ok := byDriver[ev.DriverID]; ok {
				t.Fatalf("driver %s offered rides %s and %s", ev.DriverID, prev, ev.Ride.ID)
			}
			byDriver[ev.DriverID] = ev.Ride.ID
		}
	}
	if offers != len(rides) {
		t.Fatalf("%d offers for %d rides", offers, len(rides))
	}
	for _, r := range rides {
		o := rideOffer(t, rg.replicas[1], r.ID)
		d, err := rg.store.Driver(context.Background(), o.DriverID)
		if err != nil || d.OfferID != o.ID {
			t.Fatalf("ride %s offer %s, driver %+v %v", r.ID, o.ID, d, err)
		}
	}
}

// An "out of supply" from another replica that overtook a later "in" (a claim there, a
// completed trip here) is checked against the Store at the next step.
func TestStaleSupplyOutIsRechecked(t *testing.T) {
	rg := mustOpenRegion(t, 2, nil)
	a := rg.replicas[0]
	a.online(t, "d-1", gangnam)
	a.Replicas().Apply(dispatch.PeerEvent{Type: dispatch.PeerSupply, DriverID: "d-1"}) // stale
	if a.Available() != 0 {
		t.Fatal("an out of supply from another replica was not applied at once")
	}
	a.step(t)
	if a.Available() != 1 {
		t.Fatal("the available driver stayed out of supply after the recheck")
	}
}
