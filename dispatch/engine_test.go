package dispatch_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
	"github.com/understudy/understudy/dispatch/memstore"
)

// clock is a settable clock for tests: timeouts fire when the test says, not by sleeping.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// recorder keeps every event the engine publishes.
type recorder struct {
	mu  sync.Mutex
	evs []dispatch.Event
}

func (r *recorder) Notify(ev dispatch.Event) { r.mu.Lock(); r.evs = append(r.evs, ev); r.mu.Unlock() }

// take returns and forgets the events of type typ for driverID ("" = any driver).
func (r *recorder) take(typ dispatch.EventType, driverID string) []dispatch.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var got, keep []dispatch.Event
	for _, ev := range r.evs {
		if ev.Type == typ && (driverID == "" || ev.DriverID == driverID) {
			got = append(got, ev)
		} else {
			keep = append(keep, ev)
		}
	}
	r.evs = keep
	return got
}

type testEngine struct {
	*dispatch.Engine
	clock *clock
	rec   *recorder
	store *memstore.Store
}

var (
	gangnam  = dispatch.Point{Lat: 37.4979, Lng: 127.0276}
	seoulStn = dispatch.Point{Lat: 37.5547, Lng: 126.9707}
)

// near returns p moved by dLat, dLng metres (roughly).
func near(p dispatch.Point, northM, eastM float64) dispatch.Point {
	return dispatch.Point{Lat: p.Lat + northM/111_000, Lng: p.Lng + eastM/88_000}
}

func mustOpenEngine(tb testing.TB, tune func(*dispatch.Config)) *testEngine {
	tb.Helper()
	cfg := dispatch.DefaultConfig()
	if tune != nil {
		tune(&cfg)
	}
	te := &testEngine{clock: newClock(), rec: &recorder{}, store: memstore.New()}
	te.Engine = &dispatch.Engine{Store: te.store, Notifier: te.rec, Config: cfg, Now: te.clock.Now, Stepped: true}
	if err := te.Open(context.Background()); err != nil {
		tb.Fatalf("open engine: %v", err)
	}
	tb.Cleanup(func() { _ = te.Close() })
	return te
}

// online connects a driver at p and makes it available.
func (te *testEngine) online(tb testing.TB, id string, p dispatch.Point) {
	tb.Helper()
	ctx := context.Background()
	if _, err := te.Drivers().Connect(ctx, id); err != nil {
		tb.Fatalf("connect %s: %v", id, err)
	}
	if err := te.Drivers().UpdateLocation(ctx, id, p); err != nil {
		tb.Fatalf("location %s: %v", id, err)
	}
	if d, err := te.Drivers().SetAvailable(ctx, id); err != nil || d.State != dispatch.DriverAvailable {
		tb.Fatalf("available %s: %+v %v", id, d, err)
	}
}

func (te *testEngine) step(tb testing.TB) {
	tb.Helper()
	if err := te.Step(context.Background()); err != nil {
		tb.Fatalf("step: %v", err)
	}
}

func (te *testEngine) request(tb testing.TB, pickup dispatch.Point) dispatch.Ride {
	tb.Helper()
	r, err := te.Riders().RequestRide(context.Background(), "u-1", pickup, seoulStn)
	if err != nil {
		tb.Fatalf("request: %v", err)
	}
	return r
}

// offerTo returns the one offer driverID received since the last call.
func (te *testEngine) offerTo(tb testing.TB, driverID string) *dispatch.Offer {
	tb.Helper()
	evs := te.rec.take(dispatch.EventOffer, driverID)
	if len(evs) != 1 {
		tb.Fatalf("driver %s got %d offers, want 1", driverID, len(evs))
	}
	return evs[0].Offer
}

func (te *testEngine) noOffers(tb testing.TB) {
	tb.Helper()
	if evs := te.rec.take(dispatch.EventOffer, ""); len(evs) != 0 {
		tb.Fatalf("unexpected offers: %+v", evs)
	}
}

func (te *testEngine) rideStatus(tb testing.TB, id string, want dispatch.RideStatus) dispatch.Ride {
	tb.Helper()
	r, err := te.Riders().Ride(context.Background(), id)
	if err != nil {
		tb.Fatalf("ride %s: %v", id, err)
	}
	if r.Status != want {
		tb.Fatalf("ride %s is %s, want %s", id, r.Status, want)
	}
	return r
}

func (te *testEngine) driverState(tb testing.TB, id string, want dispatch.DriverState) {
	tb.Helper()
	d, err := te.Riders().Driver(context.Background(), id)
	if err != nil {
		tb.Fatalf("driver %s: %v", id, err)
	}
	if d.State != want {
		tb.Fatalf("driver %s is %s, want %s", id, d.State, want)
	}
}

func TestTripHappyPath(t *testing.T) {
	ctx := context.Background()
	te := mustOpenEngine(t, nil)
	te.online(t, "d-near", near(gangnam, 200, 0))
	te.online(t, "d-far", near(gangnam, 1500, 0))
	r := te.request(t, gangnam)
	if r.Status != dispatch.RideSearching || r.Fare.Amount <= 0 || r.Fare.Currency != "KRW" {
		t.Fatalf("new ride = %+v", r)
	}
	te.step(t)
	o := te.offerTo(t, "d-near")
	if o.RideID != r.ID || !o.ExpiresAt.Equal(te.clock.Now().Add(15*time.Second)) {
		t.Fatalf("offer = %+v", o)
	}
	te.noOffers(t)
	te.driverState(t, "d-near", dispatch.DriverOffered)

	got, err := te.Drivers().Accept(ctx, "d-near", o.ID)
	if err != nil || got.Status != dispatch.RideMatched || got.DriverID != "d-near" {
		t.Fatalf("accept = %+v, %v", got, err)
	}
	if evs := te.rec.take(dispatch.EventAssigned, "d-near"); len(evs) != 1 || evs[0].Ride.ID != r.ID {
		t.Fatalf("assigned events = %+v", evs)
	}
	te.driverState(t, "d-near", dispatch.DriverEnRoute)
	for _, step := range []struct {
		do   func(context.Context, string, string) (dispatch.Ride, error)
		want dispatch.RideStatus
		drv  dispatch.DriverState
	}{
		{te.Drivers().Arrived, dispatch.RideArrived, dispatch.DriverEnRoute},
		{te.Drivers().Start, dispatch.RideInProgress, dispatch.DriverOnTrip},
		{te.Drivers().Complete, dispatch.RideCompleted, dispatch.DriverAvailable},
	} {
		got, err := step.do(ctx, "d-near", r.ID)
		if err != nil || got.Status != step.want {
			t.Fatalf("%s: %+v, %v", step.want, got, err)
		}
		te.driverState(t, "d-near", step.drv)
		// A retried frame is harmless.
		if again, err := step.do(ctx, "d-near", r.ID); err != nil || again.Status != step.want {
			t.Fatalf("repeat %s: %+v, %v", step.want, again, err)
		}
	}
	var statuses []dispatch.RideStatus
	for _, ev := range te.rec.take(dispatch.EventRideChanged, "") {
		statuses = append(statuses, ev.Ride.Status)
	}
	want := []dispatch.RideStatus{"searching", "matched", "arrived", "in_progress", "completed"}
	if len(statuses) != len(want) {
		t.Fatalf("ride changes %v, want %v", statuses, want)
	}
	for i := range want {
		if statuses[i] != want[i] {
			t.Fatalf("ride changes %v, want %v", statuses, want)
		}
	}
	// The completed driver is back in supply and gets the next ride.
	te.request(t, gangnam)
	te.step(t)
	te.offerTo(t, "d-near")
}

func TestDeclineAndTimeoutCascade(t *testing.T) {
	ctx := context.Background()
	te := mustOpenEngine(t, nil)
	te.online(t, "d-1", near(gangnam, 100, 0))
	te.online(t, "d-2", near(gangnam, 400, 0))
	te.online(t, "d-3", near(gangnam, 900, 0))
	r := te.request(t, gangnam)
	te.step(t)
	o1 := te.offerTo(t, "d-1")
	if err := te.Drivers().Decline(ctx, "d-1", o1.ID); err != nil {
		t.Fatalf("decline: %v", err)
	}
	te.driverState(t, "d-1", dispatch.DriverAvailable)
	te.step(t)
	o2 := te.offerTo(t, "d-2") // the next nearest, never d-1 again
	te.noOffers(t)

	// d-2 lets it expire: revoked, then d-3.
	te.clock.Advance(15 * time.Second)
	te.step(t)
	evs := te.rec.take(dispatch.EventOfferRevoked, "d-2")
	if len(evs) != 1 || evs[0].Reason != dispatch.ReasonExpired || evs[0].Offer.ID != o2.ID {
		t.Fatalf("revocations = %+v", evs)
	}
	if stored := te.rideStatus(t, r.ID, dispatch.RideSearching); evs[0].Ride.Version != stored.Version-1 || evs[0].Ride.Offer != nil { // the re-offer to d-3 came after
		t.Fatalf("revocation carries ride version %d, stored %d", evs[0].Ride.Version, stored.Version)
	}
	o3 := te.offerTo(t, "d-3")
	// An answer to the expired offer is refused.
	if _, err := te.Drivers().Accept(ctx, "d-2", o2.ID); !errors.Is(err, dispatch.ErrOfferExpired) {
		t.Fatalf("late accept: %v, want ErrOfferExpired", err)
	}
	if got, err := te.Drivers().Accept(ctx, "d-3", o3.ID); err != nil || got.DriverID != "d-3" {
		t.Fatalf("accept: %+v %v", got, err)
	}
	te.rideStatus(t, r.ID, dispatch.RideMatched)

	// With every driver declined, the ride waits, then ends as no_driver.
	r2 := te.request(t, gangnam)
	te.step(t)
	od := te.offerTo(t, "d-1")
	if err := te.Drivers().Decline(ctx, "d-1", od.ID); err != nil {
		t.Fatal(err)
	}
	te.step(t)
	od = te.offerTo(t, "d-2")
	if err := te.Drivers().Decline(ctx, "d-2", od.ID); err != nil {
		t.Fatal(err)
	}
	te.step(t)
	te.noOffers(t)
	te.rideStatus(t, r2.ID, dispatch.RideSearching)
	te.clock.Advance(2 * time.Minute)
	te.step(t)
	te.rideStatus(t, r2.ID, dispatch.RideNoDriver)
}

func TestAcceptAfterDeadlineLosesToExpiry(t *testing.T) {
	ctx := context.Background()
	te := mustOpenEngine(t, nil)
	te.online(t, "d-1", gangnam)
	r := te.request(t, gangnam)
	te.step(t)
	o := te.offerTo(t, "d-1")
	te.clock.Advance(15 * time.Second) // the sweep has not run yet
	if _, err := te.Drivers().Accept(ctx, "d-1", o.ID); !errors.Is(err, dispatch.ErrOfferExpired) {
		t.Fatalf("accept at the deadline: %v, want ErrOfferExpired", err)
	}
	if evs := te.rec.take(dispatch.EventOfferRevoked, "d-1"); len(evs) != 1 {
		t.Fatalf("the driver must hear offer_revoked, got %+v", evs)
	}
	te.step(t) // the sweep finds nothing left to do; d-1 declined by silence
	te.noOffers(t)
	ride := te.rideStatus(t, r.ID, dispatch.RideSearching)
	if len(ride.Declined) != 1 || ride.Declined[0] != "d-1" || ride.Offer != nil {
		t.Fatalf("ride after expiry = %+v", ride)
	}
	te.driverState(t, "d-1", dispatch.DriverAvailable)
}

func TestCancel(t *testing.T) {
	ctx := context.Background()
	te := mustOpenEngine(t, nil)
	te.online(t, "d-1", gangnam)

	// While an offer is out: the offer is revoked and the driver freed.
	r := te.request(t, gangnam)
	te.step(t)
	o := te.offerTo(t, "d-1")
	got, err := te.Riders().CancelRide(ctx, r.ID)
	if err != nil || got.Status != dispatch.RideCancelled {
		t.Fatalf("cancel: %+v %v", got, err)
	}
	if evs := te.rec.take(dispatch.EventOfferRevoked, "d-1"); len(evs) != 1 || evs[0].Reason != dispatch.ReasonCancelled || evs[0].Offer.ID != o.ID {
		t.Fatalf("revocations = %+v", evs)
	}
	te.driverState(t, "d-1", dispatch.DriverAvailable)
	if _, err := te.Drivers().Accept(ctx, "d-1", o.ID); !errors.Is(err, dispatch.ErrOfferExpired) {
		t.Fatalf("accept after cancel: %v", err)
	}
	if again, err := te.Riders().CancelRide(ctx, r.ID); err != nil || again.Status != dispatch.RideCancelled {
		t.Fatalf("second cancel: %+v %v", again, err)
	}

	// After the accept: the driver hears ride_cancelled and is available again.
	r = te.request(t, gangnam)
	te.step(t)
	o = te.offerTo(t, "d-1")
	if _, err := te.Drivers().Accept(ctx, "d-1", o.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := te.Riders().CancelRide(ctx, r.ID); err != nil {
		t.Fatal(err)
	}
	if evs := te.rec.take(dispatch.EventRideCancelled, "d-1"); len(evs) != 1 || evs[0].Ride.ID != r.ID {
		t.Fatalf("ride_cancelled events = %+v", evs)
	}
	te.driverState(t, "d-1", dispatch.DriverAvailable)
	if _, err := te.Drivers().Arrived(ctx, "d-1", r.ID); dispatch.ErrorCode(err) != dispatch.ECodeConflict {
		t.Fatalf("arrived on a cancelled ride: %v, want conflict", err)
	}

	// In progress (its driver ends it) and after completion: refused.
	r = te.request(t, gangnam)
	te.step(t)
	o = te.offerTo(t, "d-1")
	for _, f := range []func() (dispatch.Ride, error){
		func() (dispatch.Ride, error) { return te.Drivers().Accept(ctx, "d-1", o.ID) },
		func() (dispatch.Ride, error) { return te.Drivers().Arrived(ctx, "d-1", r.ID) },
		func() (dispatch.Ride, error) { return te.Drivers().Start(ctx, "d-1", r.ID) },
	} {
		if _, err := f(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := te.Riders().CancelRide(ctx, r.ID); !errors.Is(err, dispatch.ErrIllegalTransition) {
		t.Fatalf("cancel in progress: %v, want ErrIllegalTransition", err)
	}
	te.rideStatus(t, r.ID, dispatch.RideInProgress)
	if _, err := te.Drivers().Complete(ctx, "d-1", r.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := te.Riders().CancelRide(ctx, r.ID); !errors.Is(err, dispatch.ErrIllegalTransition) {
		t.Fatalf("cancel after completion: %v, want ErrIllegalTransition", err)
	}
	if _, err := te.Riders().CancelRide(ctx, "r_unknown"); !errors.Is(err, dispatch.ErrRideNotFound) {
		t.Fatalf("cancel unknown: %v", err)
	}
}

func TestOneOfferPerDriverAndRide(t *testing.T) {
	ctx := context.Background()
	te := mustOpenEngine(t, nil)
	te.online(t, "d-1", gangnam)
	r1 := te.request(t, gangnam)
	r2 := te.request(t, near(gangnam, 50, 0))
	te.step(t)
	o := te.offerTo(t, "d-1")
	te.step(t)
	te.noOffers(t) // d-1 holds one offer; the other ride waits
	other := r2.ID
	if o.RideID == r2.ID {
		other = r1.ID
	}
	if err := te.Drivers().Decline(ctx, "d-1", o.ID); err != nil {
		t.Fatal(err)
	}
	te.step(t)
	if o2 := te.offerTo(t, "d-1"); o2.RideID != other {
		t.Fatalf("second offer for %s, want %s", o2.RideID, other)
	}
}

// Two rides and two drivers placed so that every greedy rule (cheapest pair first, or
// each ride its nearest driver) is clearly worse than the batch optimum: the engine
// must use the optimal solver.
func TestBatchBeatsGreedy(t *testing.T) {
	te := mustOpenEngine(t, nil)
	// Along a north-south line: A at 0 m, d-1 at 100 m, B at 250 m, d-2 at -1000 m.
	// Greedy takes the cheapest pair, A and d-1 (100 m), leaving B with d-2 (1250 m):
	// 1350 m in all. Optimal: A takes d-2 (1000 m), B takes d-1 (150 m): 1150 m.
	te.online(t, "d-1", near(gangnam, 100, 0))
	te.online(t, "d-2", near(gangnam, -1000, 0))
	a := te.request(t, gangnam)
	b := te.request(t, near(gangnam, 250, 0))
	te.step(t)
	o1 := te.offerTo(t, "d-1")
	o2 := te.offerTo(t, "d-2")
	if o1.RideID != b.ID || o2.RideID != a.ID {
		t.Fatalf("d-1 got %s (%v m), d-2 got %s (%v m); want d-1→B (%s), d-2→A (%s), 1150 m in all",
			o1.RideID, o1.PickupM, o2.RideID, o2.PickupM, b.ID, a.ID)
	}
	if total := o1.PickupM + o2.PickupM; total < 1140 || total > 1160 {
		t.Fatalf("pickups of %v m and %v m, want about 150 m and 1000 m", o1.PickupM, o2.PickupM)
	}
}

func TestBadInputAndIllegalChanges(t *testing.T) {
	ctx := context.Background()
	te := mustOpenEngine(t, nil)
	if _, err := te.Drivers().Connect(ctx, "d-1"); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		err  error
		want dispatch.ECode
	}{
		{"available before any location", func() error { _, err := te.Drivers().SetAvailable(ctx, "d-1"); return err }(), dispatch.ECodeConflict},
		{"latitude out of range", te.Drivers().UpdateLocation(ctx, "d-1", dispatch.Point{Lat: 91, Lng: 0}), dispatch.ECodeInvalid},
		{"longitude out of range", te.Drivers().UpdateLocation(ctx, "d-1", dispatch.Point{Lat: 0, Lng: -181}), dispatch.ECodeInvalid},
		{"location of unknown driver", te.Drivers().UpdateLocation(ctx, "d-none", gangnam), dispatch.ECodeNotFound},
		{"request with bad pickup", func() error {
			_, err := te.Riders().RequestRide(ctx, "u-1", dispatch.Point{Lat: 100}, gangnam)
			return err
		}(), dispatch.ECodeInvalid},
		{"request without rider", func() error { _, err := te.Riders().RequestRide(ctx, "", gangnam, gangnam); return err }(), dispatch.ECodeInvalid},
		{"accept with no offer", func() error { _, err := te.Drivers().Accept(ctx, "d-1", "o_nope"); return err }(), dispatch.ECodeConflict},
		{"decline unknown driver", te.Drivers().Decline(ctx, "d-none", "o_nope"), dispatch.ECodeNotFound},
		{"arrive at unknown ride", func() error { _, err := te.Drivers().Arrived(ctx, "d-1", "r_nope"); return err }(), dispatch.ECodeNotFound},
		{"estimate with bad dropoff", func() error { _, err := te.Riders().Estimate(gangnam, dispatch.Point{Lng: 200}); return err }(), dispatch.ECodeInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := dispatch.ErrorCode(c.err); got != c.want {
				t.Fatalf("error %v has code %q, want %q", c.err, got, c.want)
			}
		})
	}

	// Trip steps out of order, and by a driver the ride does not belong to.
	te.online(t, "d-2", gangnam)
	r := te.request(t, gangnam)
	te.step(t)
	o := te.offerTo(t, "d-2")
	if _, err := te.Drivers().Start(ctx, "d-2", r.ID); dispatch.ErrorCode(err) != dispatch.ECodeConflict {
		t.Fatalf("start while searching: %v", err)
	}
	if _, err := te.Drivers().Accept(ctx, "d-2", o.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := te.Drivers().Complete(ctx, "d-2", r.ID); !errors.Is(err, dispatch.ErrIllegalTransition) {
		t.Fatalf("complete before start: %v", err)
	}
	if _, err := te.Drivers().Arrived(ctx, "d-1", r.ID); !errors.Is(err, dispatch.ErrRideNotFound) {
		t.Fatalf("another driver's ride: %v", err)
	}
	if _, err := te.Drivers().SetOffline(ctx, "d-2"); !errors.Is(err, dispatch.ErrIllegalTransition) {
		t.Fatalf("offline with an assigned ride: %v", err)
	}
}

func TestOfflineWhileOfferedDeclines(t *testing.T) {
	ctx := context.Background()
	te := mustOpenEngine(t, nil)
	te.online(t, "d-1", gangnam)
	te.online(t, "d-2", near(gangnam, 500, 0))
	r := te.request(t, gangnam)
	te.step(t)
	te.offerTo(t, "d-1")
	d, err := te.Drivers().SetOffline(ctx, "d-1")
	if err != nil || d.State != dispatch.DriverOffline {
		t.Fatalf("offline: %+v %v", d, err)
	}
	te.driverState(t, "d-1", dispatch.DriverOffline)
	te.step(t)
	if o := te.offerTo(t, "d-2"); o.RideID != r.ID {
		t.Fatalf("offer = %+v", o)
	}
	// An offline driver gets nothing, even when nearest.
	te.request(t, gangnam)
	te.step(t)
	te.noOffers(t)
	if te.Available() != 0 {
		t.Fatalf("available = %d, want 0", te.Available())
	}
}

func TestEstimate(t *testing.T) {
	te := mustOpenEngine(t, nil)
	est, err := te.Riders().Estimate(gangnam, seoulStn)
	if err != nil {
		t.Fatal(err)
	}
	if est.PickupETAS != nil {
		t.Fatalf("ETA %d with no drivers, want nil", *est.PickupETAS)
	}
	straight := dispatch.DistanceM(gangnam, seoulStn)
	if est.DistanceM < straight || est.DistanceM > 1.5*straight || est.Fare.Amount < 4800 || est.Fare.Currency != "KRW" {
		t.Fatalf("estimate = %+v (straight line %.0f m)", est, straight)
	}
	te.online(t, "d-1", near(gangnam, 1000, 0))
	est, err = te.Riders().Estimate(gangnam, seoulStn)
	if err != nil || est.PickupETAS == nil {
		t.Fatalf("estimate with a driver = %+v %v", est, err)
	}
	// 1 km straight, 1.3 km by road at 24 km/h: about 195 s.
	if *est.PickupETAS < 150 || *est.PickupETAS > 250 {
		t.Fatalf("ETA %d s for a driver 1 km away", *est.PickupETAS)
	}
	if _, err := te.Riders().RequestRide(context.Background(), "u-1", gangnam, seoulStn); err != nil {
		t.Fatal(err)
	}
}

func TestReopenRebuildsFromStore(t *testing.T) {
	ctx := context.Background()
	te := mustOpenEngine(t, nil)
	te.online(t, "d-1", gangnam)
	te.online(t, "d-2", near(gangnam, 300, 0))
	offered := te.request(t, gangnam)
	te.step(t)
	o := te.offerTo(t, "d-1")
	waiting := te.request(t, near(gangnam, 10, 0)) // queued, not yet matched

	// A new engine on the same store picks up where the first stopped.
	e2 := &dispatch.Engine{Store: te.store, Notifier: te.rec, Config: te.Config, Now: te.clock.Now, Epoch: 2, Stepped: true}
	if err := e2.Open(ctx); err != nil {
		t.Fatal(err)
	}
	if e2.Available() != 1 || e2.Pending() != 1 {
		t.Fatalf("rebuilt: available %d pending %d, want 1 and 1", e2.Available(), e2.Pending())
	}
	if err := e2.Step(ctx); err != nil {
		t.Fatal(err)
	}
	if o2 := te.offerTo(t, "d-2"); o2.RideID != waiting.ID {
		t.Fatalf("offer after rebuild = %+v", o2)
	}
	// The old offer's expiry is still tracked by the new engine.
	te.clock.Advance(15 * time.Second)
	if err := e2.Step(ctx); err != nil {
		t.Fatal(err)
	}
	if evs := te.rec.take(dispatch.EventOfferRevoked, "d-1"); len(evs) != 1 || evs[0].Offer.ID != o.ID {
		t.Fatalf("revocations after rebuild = %+v", evs)
	}
	if r, err := e2.Riders().Ride(ctx, offered.ID); err != nil || r.Status != dispatch.RideSearching ||
		(r.Offer != nil && r.Offer.ID == o.ID) || !slices.Contains(r.Declined, "d-1") {
		t.Fatalf("the expired offer's ride after rebuild = %+v, %v; want searching on, d-1 declined", r, err)
	}
	// The first engine's epoch is fenced off: it can no longer assign.
	if _, err := te.Drivers().Accept(ctx, "d-2", "whatever"); err == nil {
		t.Fatal("accept of an unknown offer succeeded")
	}
	if _, err := te.Riders().RequestRide(ctx, "u-1", gangnam, seoulStn); !errors.Is(err, dispatch.ErrStaleEpoch) {
		t.Fatalf("old engine wrote after being fenced: %v", err)
	}
}

func TestRunMatchesAtOnceWithZeroInterval(t *testing.T) {
	cfg := dispatch.DefaultConfig()
	cfg.MatchInterval = 0
	te := &testEngine{clock: newClock(), rec: &recorder{}, store: memstore.New()}
	te.Engine = &dispatch.Engine{Store: te.store, Notifier: te.rec, Config: cfg} // its own loop, real clock
	if err := te.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = te.Close() }()
	if err := te.Step(context.Background()); err == nil {
		t.Fatal("Step on an engine running its own loop: no error")
	}
	te.online(t, "d-1", gangnam)
	te.request(t, gangnam)
	dispatchtest.Eventually(t, func() error {
		if len(te.rec.take(dispatch.EventOffer, "d-1")) == 0 {
			return errors.New("no offer to d-1 since the request")
		}
		return nil
	})
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []struct {
		name string
		tune func(*dispatch.Config)
		ok   bool
	}{
		{"defaults", func(*dispatch.Config) {}, true},
		{"zero interval", func(c *dispatch.Config) { c.MatchInterval = 0 }, true},
		{"resolution 16", func(c *dispatch.Config) { c.H3Resolution = 16 }, false},
		{"no offer timeout", func(c *dispatch.Config) { c.OfferTimeout = 0 }, false},
		{"negative interval", func(c *dispatch.Config) { c.MatchInterval = -1 }, false},
		{"no radius", func(c *dispatch.Config) { c.MaxRadiusM = 0 }, false},
		{"no candidates", func(c *dispatch.Config) { c.Candidates = 0 }, false},
		{"bad currency", func(c *dispatch.Config) { c.Fare.Currency = "won" }, false},
		{"zero speed", func(c *dispatch.Config) { c.Fare.AvgSpeedKmh = 0 }, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := dispatch.DefaultConfig()
			c.tune(&cfg)
			if err := cfg.Validate(); (err == nil) != c.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, c.ok)
			}
		})
	}
}

func TestStateMachines(t *testing.T) {
	rides := []struct {
		from, to dispatch.RideStatus
		ok       bool
	}{
		{"searching", "matched", true}, {"searching", "cancelled", true}, {"searching", "no_driver", true},
		{"searching", "arrived", false}, {"matched", "arrived", true}, {"matched", "in_progress", false},
		{"arrived", "in_progress", true}, {"in_progress", "completed", true}, {"in_progress", "cancelled", false}, {"arrived", "cancelled", true},
		{"completed", "cancelled", false}, {"no_driver", "searching", false}, {"cancelled", "matched", false},
	}
	for _, c := range rides {
		if got := c.from.CanBecome(c.to); got != c.ok {
			t.Errorf("ride %s → %s: %v, want %v", c.from, c.to, got, c.ok)
		}
	}
	drivers := []struct {
		from, to dispatch.DriverState
		ok       bool
	}{
		{"offline", "available", true}, {"offline", "offered", false}, {"available", "offered", true},
		{"offered", "en_route", true}, {"offered", "on_trip", false}, {"en_route", "on_trip", true},
		{"on_trip", "available", true}, {"on_trip", "offline", false}, {"en_route", "offered", false},
	}
	for _, c := range drivers {
		if got := c.from.CanBecome(c.to); got != c.ok {
			t.Errorf("driver %s → %s: %v, want %v", c.from, c.to, got, c.ok)
		}
	}
}

func TestErrorTable(t *testing.T) {
	for _, c := range []struct {
		err    error
		status int
		ws     int
	}{
		{dispatch.ErrRideNotFound, 404, 0},
		{dispatch.ErrIllegalTransition, 409, 0},
		{dispatch.Errorf(dispatch.ECodeTooLarge, "x"), 413, 1009},
		{dispatch.Errorf(dispatch.ECodeRateLimited, "x"), 429, 1008},
		{errors.New("redis: connection refused"), 500, 1011},
	} {
		info := dispatch.ErrorCode(c.err).Info()
		if info.HTTPStatus != c.status || info.WSClose != c.ws {
			t.Errorf("%v: %+v, want %d / %d", c.err, info, c.status, c.ws)
		}
	}
	if msg := dispatch.ErrorMessage(errors.New("redis: secret host")); msg != "internal error" {
		t.Errorf("internal error leaked: %q", msg)
	}
}

// Rides that all list the same few drivers get the next ones within the same tick.
func TestContendedRidesRebatchWithinOneStep(t *testing.T) {
	te := mustOpenEngine(t, func(c *dispatch.Config) { c.Candidates = 1 })
	for i, m := range []float64{100, 200, 300} {
		te.online(t, fmt.Sprintf("d-%d", i), near(gangnam, m, 0))
	}
	for range 3 {
		te.request(t, gangnam)
	}
	te.step(t)
	if evs := te.rec.take(dispatch.EventOffer, ""); len(evs) != 3 {
		t.Fatalf("%d offers after one step, want 3", len(evs))
	}
	if te.Pending() != 0 {
		t.Fatalf("%d rides still pending", te.Pending())
	}
}

// A driver whose app dropped is offered nothing until it connects again.
func TestDisconnectedDriverIsOfferedNothing(t *testing.T) {
	ctx := context.Background()
	te := mustOpenEngine(t, nil)
	te.online(t, "d-near", gangnam)
	te.online(t, "d-far", near(gangnam, 2000, 0))
	te.Drivers().Disconnect("d-near")
	// Neither a location update nor a freed offer puts it back in supply.
	if err := te.Drivers().UpdateLocation(ctx, "d-near", near(gangnam, 5, 0)); err != nil {
		t.Fatal(err)
	}
	r := te.request(t, gangnam)
	te.step(t)
	if o := te.offerTo(t, "d-far"); o.RideID != r.ID {
		t.Fatalf("offer = %+v", o)
	}
	te.driverState(t, "d-near", dispatch.DriverAvailable) // state kept through the drop
	if _, err := te.Drivers().Connect(ctx, "d-near"); err != nil {
		t.Fatal(err)
	}
	te.request(t, gangnam)
	te.step(t)
	te.offerTo(t, "d-near")
}

// A driver who lets MaxMissedOffers offers in a row expire is taken offline; any
// answer in between starts the count over.
func TestMissedOffersTakeADriverOffline(t *testing.T) {
	ctx := context.Background()
	te := mustOpenEngine(t, nil) // MaxMissedOffers 3
	te.online(t, "d-1", gangnam)
	miss := func() {
		t.Helper()
		te.request(t, gangnam)
		te.step(t)
		te.offerTo(t, "d-1")
		te.clock.Advance(15 * time.Second)
		te.step(t)
		if evs := te.rec.take(dispatch.EventOfferRevoked, "d-1"); len(evs) != 1 {
			t.Fatalf("revocations = %+v", evs)
		}
	}
	miss()
	miss()
	// An answer (here a decline) starts the count over.
	te.request(t, gangnam)
	te.step(t)
	if err := te.Drivers().Decline(ctx, "d-1", te.offerTo(t, "d-1").ID); err != nil {
		t.Fatal(err)
	}
	miss()
	miss()
	te.driverState(t, "d-1", dispatch.DriverAvailable)
	if evs := te.rec.take(dispatch.EventDriverOffline, ""); len(evs) != 0 {
		t.Fatalf("taken offline after two misses in a row: %+v", evs)
	}
	miss()
	te.driverState(t, "d-1", dispatch.DriverOffline)
	if evs := te.rec.take(dispatch.EventDriverOffline, "d-1"); len(evs) != 1 || evs[0].Reason != dispatch.ReasonMissedOffers {
		t.Fatalf("offline events = %+v", evs)
	}
	te.request(t, gangnam)
	te.step(t)
	te.noOffers(t)
	// Going available again is the driver's call, and it is offered rides again.
	if _, err := te.Drivers().SetAvailable(ctx, "d-1"); err != nil {
		t.Fatal(err)
	}
	te.step(t)
	te.offerTo(t, "d-1")
}
