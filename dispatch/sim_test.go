package dispatch_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/memstore"
)

// TestSimulationInvariants drives thousands of drivers and riders through random moves,
// accepts, declines, silences (timeouts) and cancels, concurrently within each round,
// and checks after every engine step that no driver has two rides, no ride has two
// drivers, and no accepted ride is lost.
func TestSimulationInvariants(t *testing.T) {
	const (
		drivers = 2000
		workers = 8
	)
	rounds := 120
	if testing.Short() {
		rounds = 40
	}
	for _, interval := range []time.Duration{100 * time.Millisecond, 0} {
		t.Run(fmt.Sprintf("interval=%s", interval), func(t *testing.T) {
			runSimulation(t, drivers, workers, rounds, interval)
		})
	}
}

var incheonAirport = dispatch.Point{Lat: 37.4602, Lng: 126.4407}

type simState struct {
	mu       sync.Mutex
	accepted map[string]string // ride → driver whose accept succeeded
	rides    []string
	requests int
	accepts  int
}

func runSimulation(t *testing.T, nDrivers, workers, rounds int, interval time.Duration) {
	ctx := context.Background()
	clk := newClock()
	store := memstore.New()
	cfg := dispatch.DefaultConfig()
	cfg.MatchInterval = interval
	e := &dispatch.Engine{Store: store, Config: cfg, Now: clk.Now, Stepped: true}
	if err := e.Open(ctx); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	seoul := func(r *rand.Rand) dispatch.Point {
		// Demand and supply around a few hubs so candidates overlap and claims race.
		hubs := []dispatch.Point{gangnam, seoulStn, {Lat: 37.5563, Lng: 126.9236}, {Lat: 37.5133, Lng: 127.1001}}
		h := hubs[r.IntN(len(hubs))]
		return near(h, r.NormFloat64()*1200, r.NormFloat64()*1200)
	}
	ids := make([]string, nDrivers)
	for i := range ids {
		ids[i] = fmt.Sprintf("d-%04d", i)
		if _, err := e.Drivers().Connect(ctx, ids[i]); err != nil {
			t.Fatal(err)
		}
		if err := e.Drivers().UpdateLocation(ctx, ids[i], seoul(rng)); err != nil {
			t.Fatal(err)
		}
		if rng.IntN(10) < 8 {
			if _, err := e.Drivers().SetAvailable(ctx, ids[i]); err != nil {
				t.Fatal(err)
			}
		}
	}
	st := &simState{accepted: make(map[string]string)}
	for round := range rounds {
		clk.Advance(time.Duration(rng.IntN(4000)) * time.Millisecond)
		var wg sync.WaitGroup
		// The loop runs during the round, so claims, expiries and deadlines race the
		// drivers' answers and the riders' cancels.
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := e.Step(ctx); err != nil {
				t.Errorf("round %d: step: %v", round, err)
			}
		}()
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(round), uint64(w)))
				for i := w; i < nDrivers; i += workers {
					if err := simDriver(ctx, e, ids[i], r, seoul, st); err != nil {
						t.Errorf("driver %s: %v", ids[i], err)
					}
				}
				// Riders: new requests and cancels.
				for range 3 {
					pickup := seoul(r)
					if r.IntN(20) == 0 {
						pickup = incheonAirport // no driver within reach: ends as no_driver
					}
					ride, err := e.Riders().RequestRide(ctx, fmt.Sprintf("u-%d", r.IntN(5000)), pickup, seoul(r))
					if err != nil {
						t.Errorf("request: %v", err)
						continue
					}
					st.mu.Lock()
					st.rides = append(st.rides, ride.ID)
					st.requests++
					st.mu.Unlock()
				}
				// Cancels aim at recent rides, which are the ones with offers out.
				st.mu.Lock()
				victim := ""
				if n := len(st.rides); n > 0 && r.IntN(2) == 0 {
					victim = st.rides[max(0, n-1-r.IntN(min(n, 40)))]
				}
				st.mu.Unlock()
				if victim != "" {
					if _, err := e.Riders().CancelRide(ctx, victim); err != nil && !errors.Is(err, dispatch.ErrIllegalTransition) {
						t.Errorf("cancel %s: %v", victim, err)
					}
				}
			}()
		}
		wg.Wait()
		checkInvariants(t, ctx, store, st)
		if t.Failed() {
			t.Fatalf("invariants broken in round %d", round)
		}
	}
	// The run must have exercised the interesting paths.
	var completed, cancelled, noDriver int
	for _, id := range st.rides {
		r, err := store.Ride(ctx, id)
		if err != nil {
			t.Fatalf("ride %s: %v", id, err)
		}
		switch r.Status {
		case dispatch.RideCompleted:
			completed++
		case dispatch.RideCancelled:
			cancelled++
		case dispatch.RideNoDriver:
			noDriver++
		}
	}
	t.Logf("requests %d, accepts %d, completed %d, cancelled %d, no_driver %d", st.requests, st.accepts, completed, cancelled, noDriver)
	if st.accepts < 100 || completed < 50 || cancelled < 10 || noDriver < 5 {
		t.Fatalf("simulation too quiet to prove anything: accepts %d completed %d cancelled %d no_driver %d",
			st.accepts, completed, cancelled, noDriver)
	}
}

// simDriver makes one random move for driver id, as its app would.
func simDriver(ctx context.Context, e *dispatch.Engine, id string, r *rand.Rand, where func(*rand.Rand) dispatch.Point, st *simState) error {
	d, err := e.Riders().Driver(ctx, id)
	if err != nil {
		return err
	}
	if d.Location != nil && r.IntN(2) == 0 {
		if err := e.Drivers().UpdateLocation(ctx, id, near(*d.Location, r.NormFloat64()*30, r.NormFloat64()*30)); err != nil {
			return err
		}
	}
	// Answers may lose races with expiry and cancels: those are conflicts, not failures.
	tolerate := func(err error) error {
		if err == nil || dispatch.ErrorCode(err) == dispatch.ECodeConflict || errors.Is(err, dispatch.ErrRideNotFound) {
			return nil
		}
		return err
	}
	switch d.State {
	case dispatch.DriverOffline:
		if r.IntN(5) == 0 {
			_, err = e.Drivers().SetAvailable(ctx, id)
		}
	case dispatch.DriverAvailable:
		if r.IntN(50) == 0 {
			_, err = e.Drivers().SetOffline(ctx, id)
		}
	case dispatch.DriverOffered:
		switch n := r.IntN(10); {
		case n < 5:
			// Sometimes the app's retry sends the accept twice at once: one may win.
			tries := 1 + r.IntN(2)
			errs := make(chan error, tries)
			for range tries {
				go func() {
					ride, err := e.Drivers().Accept(ctx, id, d.OfferID)
					if err == nil {
						st.mu.Lock()
						defer st.mu.Unlock()
						if prev, dup := st.accepted[ride.ID]; dup {
							err = fmt.Errorf("ride %s accepted twice: by %s and %s", ride.ID, prev, id)
						} else {
							st.accepted[ride.ID] = id
							st.accepts++
						}
					}
					errs <- tolerate(err)
				}()
			}
			for range tries {
				if aerr := <-errs; aerr != nil {
					err = aerr
				}
			}
		case n < 7:
			err = e.Drivers().Decline(ctx, id, d.OfferID)
		case n < 8:
			_, err = e.Drivers().SetOffline(ctx, id)
		} // else: silence, the offer times out
	case dispatch.DriverEnRoute, dispatch.DriverOnTrip:
		ride, rerr := e.Riders().Ride(ctx, d.RideID)
		if rerr != nil {
			return rerr
		}
		if r.IntN(3) == 0 {
			switch ride.Status {
			case dispatch.RideMatched:
				_, err = e.Drivers().Arrived(ctx, id, ride.ID)
			case dispatch.RideArrived:
				_, err = e.Drivers().Start(ctx, id, ride.ID)
			case dispatch.RideInProgress:
				_, err = e.Drivers().Complete(ctx, id, ride.ID)
			}
		}
	}
	return tolerate(err)
}

func checkInvariants(t *testing.T, ctx context.Context, store *memstore.Store, st *simState) {
	t.Helper()
	drivers := map[string]dispatch.Driver{}
	if err := store.Drivers(ctx, func(d dispatch.Driver) error { drivers[d.ID] = d; return nil }); err != nil {
		t.Fatalf("read the drivers: %v", err)
	}
	rideOf := map[string]string{} // ride → the driver holding it
	for _, d := range drivers {
		switch d.State {
		case dispatch.DriverOffered, dispatch.DriverEnRoute, dispatch.DriverOnTrip:
			if d.RideID == "" {
				t.Errorf("driver %s is %s without a ride", d.ID, d.State)
				continue
			}
			if other, dup := rideOf[d.RideID]; dup {
				t.Errorf("ride %s has two drivers: %s and %s", d.RideID, other, d.ID)
			}
			rideOf[d.RideID] = d.ID
			r, err := store.Ride(ctx, d.RideID)
			if err != nil {
				t.Errorf("driver %s holds unknown ride %s", d.ID, d.RideID)
				continue
			}
			if d.State == dispatch.DriverOffered {
				if r.Status != dispatch.RideSearching || r.Offer == nil || r.Offer.ID != d.OfferID || r.Offer.DriverID != d.ID {
					t.Errorf("driver %s holds offer %s that ride %s (%s) does not", d.ID, d.OfferID, r.ID, r.Status)
				}
			} else if r.DriverID != d.ID || (r.Status != dispatch.RideMatched && r.Status != dispatch.RideArrived && r.Status != dispatch.RideInProgress) {
				t.Errorf("driver %s (%s) holds ride %s which is %s with driver %q", d.ID, d.State, r.ID, r.Status, r.DriverID)
			}
		default:
			if d.RideID != "" || d.OfferID != "" {
				t.Errorf("driver %s is %s but holds ride %q offer %q", d.ID, d.State, d.RideID, d.OfferID)
			}
		}
	}
	_ = store.ActiveRides(ctx, func(r dispatch.Ride) error {
		switch {
		case r.Status == dispatch.RideSearching && r.Offer != nil:
			if rideOf[r.ID] != r.Offer.DriverID {
				t.Errorf("ride %s offered to %s, who does not hold it", r.ID, r.Offer.DriverID)
			}
		case r.Status != dispatch.RideSearching:
			if rideOf[r.ID] != r.DriverID {
				t.Errorf("ride %s (%s) assigned to %s, who does not hold it", r.ID, r.Status, r.DriverID)
			}
		}
		return nil
	})
	st.mu.Lock()
	defer st.mu.Unlock()
	for rideID, driverID := range st.accepted {
		r, err := store.Ride(ctx, rideID)
		switch {
		case err != nil:
			t.Errorf("accepted ride %s lost: %v", rideID, err)
		case r.DriverID != driverID:
			t.Errorf("accepted ride %s now has driver %q, want %s", rideID, r.DriverID, driverID)
		case r.Status == dispatch.RideSearching || r.Status == dispatch.RideNoDriver:
			t.Errorf("accepted ride %s went back to %s", rideID, r.Status)
		}
	}
}
