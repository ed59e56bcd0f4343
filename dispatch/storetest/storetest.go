// Package storetest is the contract every dispatch.Store must pass. An adapter's test
// calls Run with a constructor for fresh, empty stores.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/understudy/understudy/dispatch"
)

// Run checks store behaviour that the engine relies on. newStore returns an empty
// store; Run closes it at the end of each subtest.
func Run(t *testing.T, newStore func(tb testing.TB) dispatch.Store) {
	t.Helper()
	open := func(t *testing.T) dispatch.Store {
		s := newStore(t)
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	ctx := context.Background()
	now := time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)
	loc := dispatch.Point{Lat: 37.5, Lng: 127.0}

	t.Run("unknown ids are not found", func(t *testing.T) {
		s := open(t)
		if _, err := s.Driver(ctx, "d-none"); !errors.Is(err, dispatch.ErrDriverNotFound) {
			t.Fatalf("Driver: got %v, want ErrDriverNotFound", err)
		}
		if _, err := s.Ride(ctx, "r-none"); !errors.Is(err, dispatch.ErrRideNotFound) {
			t.Fatalf("Ride: got %v, want ErrRideNotFound", err)
		}
		if _, err := s.SetLocation(ctx, "d-none", loc, now); !errors.Is(err, dispatch.ErrDriverNotFound) {
			t.Fatalf("SetLocation: got %v, want ErrDriverNotFound", err)
		}
	})

	t.Run("create, read back, update with versions", func(t *testing.T) {
		s := open(t)
		d := dispatch.Driver{ID: "d-1", State: dispatch.DriverOffline, UpdatedAt: now}
		r := sampleRide("r-1", now)
		mustCommit(t, s, dispatch.Tx{Epoch: 1, Drivers: []dispatch.Driver{d}, Rides: []dispatch.Ride{r}})
		gotD := mustDriver(t, s, "d-1")
		if gotD.Version != 1 || gotD.State != dispatch.DriverOffline || !gotD.UpdatedAt.Equal(now) {
			t.Fatalf("driver after create = %+v", gotD)
		}
		gotR := mustRide(t, s, "r-1")
		if gotR.Version != 1 || gotR.RiderID != r.RiderID || gotR.Pickup != r.Pickup || gotR.Fare != r.Fare ||
			gotR.Offer == nil || gotR.Offer.ID != "o-1" || !gotR.Offer.ExpiresAt.Equal(r.Offer.ExpiresAt) ||
			len(gotR.Declined) != 1 || gotR.Declined[0] != "d-9" || !gotR.SearchDeadline.Equal(r.SearchDeadline) {
			t.Fatalf("ride after create = %+v, want %+v", gotR, r)
		}
		// Creating again (version 0) conflicts.
		if err := s.Commit(ctx, dispatch.Tx{Epoch: 1, Rides: []dispatch.Ride{r}}); !errors.Is(err, dispatch.ErrVersionConflict) {
			t.Fatalf("second create: got %v, want ErrVersionConflict", err)
		}
		gotR.Status = dispatch.RideCancelled
		mustCommit(t, s, dispatch.Tx{Epoch: 1, Rides: []dispatch.Ride{gotR}})
		if again := mustRide(t, s, "r-1"); again.Version != 2 || again.Status != dispatch.RideCancelled {
			t.Fatalf("ride after update = %+v", again)
		}
		// Writing at the old version conflicts.
		if err := s.Commit(ctx, dispatch.Tx{Epoch: 1, Rides: []dispatch.Ride{gotR}}); !errors.Is(err, dispatch.ErrVersionConflict) {
			t.Fatalf("stale update: got %v, want ErrVersionConflict", err)
		}
	})

	t.Run("a commit is all or nothing", func(t *testing.T) {
		s := open(t)
		mustCommit(t, s, dispatch.Tx{Epoch: 1, Drivers: []dispatch.Driver{{ID: "d-1", State: dispatch.DriverOffline}}})
		d := mustDriver(t, s, "d-1")
		d.State = dispatch.DriverAvailable
		stale := dispatch.Driver{ID: "d-2", State: dispatch.DriverOffline, Version: 7}
		err := s.Commit(ctx, dispatch.Tx{Epoch: 1, Drivers: []dispatch.Driver{d, stale}, Rides: []dispatch.Ride{sampleRide("r-1", now)}})
		if !errors.Is(err, dispatch.ErrVersionConflict) {
			t.Fatalf("got %v, want ErrVersionConflict", err)
		}
		if got := mustDriver(t, s, "d-1"); got.State != dispatch.DriverOffline || got.Version != 1 {
			t.Fatalf("d-1 was written by a failed commit: %+v", got)
		}
		if _, err := s.Ride(ctx, "r-1"); !errors.Is(err, dispatch.ErrRideNotFound) {
			t.Fatalf("r-1 was written by a failed commit: %v", err)
		}
	})

	t.Run("fencing refuses writers with an older epoch", func(t *testing.T) {
		s := open(t)
		if f, err := s.Fence(ctx, 5); err != nil || f != 5 {
			t.Fatalf("Fence(5) = %d, %v", f, err)
		}
		if f, err := s.Fence(ctx, 3); err != nil || f != 5 {
			t.Fatalf("Fence(3) lowered the fence: %d, %v", f, err)
		}
		err := s.Commit(ctx, dispatch.Tx{Epoch: 4, Drivers: []dispatch.Driver{{ID: "d-1", State: dispatch.DriverOffline}}})
		if !errors.Is(err, dispatch.ErrStaleEpoch) {
			t.Fatalf("epoch 4 under fence 5: got %v, want ErrStaleEpoch", err)
		}
		if _, err := s.Driver(ctx, "d-1"); !errors.Is(err, dispatch.ErrDriverNotFound) {
			t.Fatalf("fenced commit wrote: %v", err)
		}
		mustCommit(t, s, dispatch.Tx{Epoch: 5, Drivers: []dispatch.Driver{{ID: "d-1", State: dispatch.DriverOffline}}})
	})

	t.Run("location updates keep the version and survive a stale commit", func(t *testing.T) {
		s := open(t)
		mustCommit(t, s, dispatch.Tx{Epoch: 1, Drivers: []dispatch.Driver{{ID: "d-1", State: dispatch.DriverOffline}}})
		read := mustDriver(t, s, "d-1")
		state, err := s.SetLocation(ctx, "d-1", loc, now)
		if err != nil || state != dispatch.DriverOffline {
			t.Fatalf("SetLocation = %q, %v", state, err)
		}
		got := mustDriver(t, s, "d-1")
		if got.Version != 1 || got.Location == nil || *got.Location != loc || !got.LocatedAt.Equal(now) {
			t.Fatalf("after SetLocation: %+v", got)
		}
		// A state change from a read taken before the location must not erase it.
		read.State = dispatch.DriverAvailable
		mustCommit(t, s, dispatch.Tx{Epoch: 1, Drivers: []dispatch.Driver{read}})
		got = mustDriver(t, s, "d-1")
		if got.State != dispatch.DriverAvailable || got.Location == nil || *got.Location != loc {
			t.Fatalf("stale commit lost the location: %+v", got)
		}
	})

	t.Run("a restored ride keeps its version", func(t *testing.T) {
		s := open(t)
		logged := sampleRide("r-1", now)
		logged.Status, logged.DriverID, logged.Version = dispatch.RideMatched, "d-1", 7
		finished := sampleRide("r-2", now)
		finished.Status, finished.Version = dispatch.RideCompleted, 12
		bound := dispatch.Driver{ID: "d-1", State: dispatch.DriverEnRoute, RideID: "r-1"}
		mustCommit(t, s, dispatch.Tx{Epoch: 1, Drivers: []dispatch.Driver{bound}, Restore: []dispatch.Ride{logged, finished}})
		if got := mustRide(t, s, "r-1"); got.Version != 7 || got.Status != dispatch.RideMatched || got.DriverID != "d-1" {
			t.Fatalf("restored ride = %+v, want matched at version 7", got)
		}
		if got := mustRide(t, s, "r-2"); got.Version != 12 {
			t.Fatalf("restored finished ride at version %d, want 12", got.Version)
		}
		if got := mustDriver(t, s, "d-1"); got.Version != 1 || got.RideID != "r-1" {
			t.Fatalf("driver written with the restore = %+v", got)
		}
		var active []string
		_ = s.ActiveRides(ctx, func(r dispatch.Ride) error { active = append(active, r.ID); return nil })
		if fmt.Sprint(active) != "[r-1]" {
			t.Fatalf("active rides after the restore: %v, want [r-1]", active)
		}
		// Restoring a ride the store holds conflicts, and writes nothing else.
		err := s.Commit(ctx, dispatch.Tx{Epoch: 1, Rides: []dispatch.Ride{sampleRide("r-3", now)}, Restore: []dispatch.Ride{logged}})
		if !errors.Is(err, dispatch.ErrVersionConflict) {
			t.Fatalf("restoring a ride present: got %v, want ErrVersionConflict", err)
		}
		if _, err := s.Ride(ctx, "r-3"); !errors.Is(err, dispatch.ErrRideNotFound) {
			t.Fatalf("a failed restore wrote r-3: %v", err)
		}
		// Later changes carry on from the restored version.
		r := mustRide(t, s, "r-1")
		r.Status = dispatch.RideArrived
		mustCommit(t, s, dispatch.Tx{Epoch: 1, Rides: []dispatch.Ride{r}})
		if got := mustRide(t, s, "r-1"); got.Version != 8 || got.Status != dispatch.RideArrived {
			t.Fatalf("ride after a change = %+v, want arrived at version 8", got)
		}
		// And fencing applies to a restore as to any commit.
		if _, err := s.Fence(ctx, 2); err != nil {
			t.Fatal(err)
		}
		if err := s.Commit(ctx, dispatch.Tx{Epoch: 1, Restore: []dispatch.Ride{sampleRide("r-4", now)}}); !errors.Is(err, dispatch.ErrStaleEpoch) {
			t.Fatalf("restore under a higher fence: got %v, want ErrStaleEpoch", err)
		}
	})

	t.Run("a replaced ride takes the log's version over the stored copy", func(t *testing.T) {
		s := open(t)
		stale := sampleRide("r-1", now)
		stale.Version = 3
		mustCommit(t, s, dispatch.Tx{Epoch: 1, Restore: []dispatch.Ride{stale}})
		logged := stale
		logged.Status, logged.DriverID, logged.Version = dispatch.RideMatched, "d-1", 9
		// Over a version the store does not hold: nothing is written.
		err := s.Commit(ctx, dispatch.Tx{Epoch: 1, Replace: []dispatch.Replacement{{Ride: logged, Over: 2}}})
		if !errors.Is(err, dispatch.ErrVersionConflict) {
			t.Fatalf("replace over version 2 of a ride at 3: got %v, want ErrVersionConflict", err)
		}
		if got := mustRide(t, s, "r-1"); got.Version != 3 || got.Status != dispatch.RideSearching {
			t.Fatalf("a failed replace wrote: %+v", got)
		}
		// Over a ride the store lacks: a conflict too (that is Restore's job).
		if err := s.Commit(ctx, dispatch.Tx{Epoch: 1, Replace: []dispatch.Replacement{{Ride: sampleRide("r-2", now), Over: 1}}}); !errors.Is(err, dispatch.ErrVersionConflict) {
			t.Fatalf("replace of a missing ride: got %v, want ErrVersionConflict", err)
		}
		mustCommit(t, s, dispatch.Tx{Epoch: 1, Replace: []dispatch.Replacement{{Ride: logged, Over: 3}}})
		if got := mustRide(t, s, "r-1"); got.Version != 9 || got.Status != dispatch.RideMatched {
			t.Fatalf("replaced ride = %+v, want matched at version 9", got)
		}
		// Down as well as up: a stored copy ahead of the log (a write the log refused).
		older := logged
		older.Status, older.DriverID, older.Version = dispatch.RideSearching, "", 8
		mustCommit(t, s, dispatch.Tx{Epoch: 1, Replace: []dispatch.Replacement{{Ride: older, Over: 9}}})
		if got := mustRide(t, s, "r-1"); got.Version != 8 || got.Status != dispatch.RideSearching {
			t.Fatalf("replaced ride = %+v, want searching at version 8", got)
		}
	})

	t.Run("records read are copies", func(t *testing.T) {
		s := open(t)
		mustCommit(t, s, dispatch.Tx{Epoch: 1, Rides: []dispatch.Ride{sampleRide("r-1", now)}})
		r := mustRide(t, s, "r-1")
		r.Offer.ID = "mutated"
		r.Declined[0] = "mutated"
		again := mustRide(t, s, "r-1")
		if again.Offer.ID != "o-1" || again.Declined[0] != "d-9" {
			t.Fatalf("store shares memory with its callers: %+v", again)
		}
	})

	t.Run("listing drivers and active rides", func(t *testing.T) {
		s := open(t)
		done := sampleRide("r-done", now)
		done.Status = dispatch.RideCompleted
		mustCommit(t, s, dispatch.Tx{Epoch: 1,
			Drivers: []dispatch.Driver{{ID: "d-1"}, {ID: "d-2"}},
			Rides:   []dispatch.Ride{sampleRide("r-1", now), done, sampleRide("r-2", now)}})
		var drivers, rides []string
		if err := s.Drivers(ctx, func(d dispatch.Driver) error { drivers = append(drivers, d.ID); return nil }); err != nil {
			t.Fatal(err)
		}
		if err := s.ActiveRides(ctx, func(r dispatch.Ride) error { rides = append(rides, r.ID); return nil }); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(drivers) != "[d-1 d-2]" || fmt.Sprint(rides) != "[r-1 r-2]" {
			t.Fatalf("drivers %v, active rides %v", drivers, rides)
		}
		stop := errors.New("stop")
		if err := s.Drivers(ctx, func(dispatch.Driver) error { return stop }); !errors.Is(err, stop) {
			t.Fatalf("Drivers did not pass fn's error on: %v", err)
		}
	})

	t.Run("concurrent claims of one driver: exactly one wins", func(t *testing.T) {
		s := open(t)
		mustCommit(t, s, dispatch.Tx{Epoch: 1, Drivers: []dispatch.Driver{{ID: "d-1", State: dispatch.DriverAvailable}}})
		d := mustDriver(t, s, "d-1")
		const n = 32
		var wg sync.WaitGroup
		results := make(chan error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				claim := d
				claim.State = dispatch.DriverOffered
				claim.RideID = fmt.Sprintf("r-%d", i)
				ride := sampleRide(claim.RideID, now)
				results <- s.Commit(ctx, dispatch.Tx{Epoch: 1, Drivers: []dispatch.Driver{claim}, Rides: []dispatch.Ride{ride}})
			}()
		}
		wg.Wait()
		close(results)
		wins := 0
		for err := range results {
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, dispatch.ErrVersionConflict):
				t.Fatalf("unexpected error %v", err)
			}
		}
		if wins != 1 {
			t.Fatalf("%d claims won, want exactly 1", wins)
		}
		won := mustDriver(t, s, "d-1")
		if _, err := s.Ride(ctx, won.RideID); err != nil {
			t.Fatalf("the winner's ride was not written with its claim: %v", err)
		}
		rides := 0
		if err := s.ActiveRides(ctx, func(dispatch.Ride) error { rides++; return nil }); err != nil {
			t.Fatalf("ActiveRides: %v", err)
		}
		if rides != 1 {
			t.Fatalf("%d rides written, want only the winner's", rides)
		}
	})
}

func sampleRide(id string, now time.Time) dispatch.Ride {
	return dispatch.Ride{
		ID: id, RiderID: "u-1", Status: dispatch.RideSearching,
		Pickup: dispatch.Point{Lat: 37.55, Lng: 126.97}, Dropoff: dispatch.Point{Lat: 37.50, Lng: 127.03},
		Fare: dispatch.Money{Amount: 12000, Currency: "KRW"}, DistanceM: 8000,
		Offer:          &dispatch.Offer{ID: "o-1", RideID: id, DriverID: "d-9", ExpiresAt: now.Add(15 * time.Second)},
		Declined:       []string{"d-9"},
		SearchDeadline: now.Add(2 * time.Minute), CreatedAt: now, UpdatedAt: now,
	}
}

func mustCommit(tb testing.TB, s dispatch.Store, tx dispatch.Tx) {
	tb.Helper()
	if err := s.Commit(context.Background(), tx); err != nil {
		tb.Fatalf("commit: %v", err)
	}
}

func mustDriver(tb testing.TB, s dispatch.Store, id string) dispatch.Driver {
	tb.Helper()
	d, err := s.Driver(context.Background(), id)
	if err != nil {
		tb.Fatalf("driver %s: %v", id, err)
	}
	return d
}

func mustRide(tb testing.TB, s dispatch.Store, id string) dispatch.Ride {
	tb.Helper()
	r, err := s.Ride(context.Background(), id)
	if err != nil {
		tb.Fatalf("ride %s: %v", id, err)
	}
	return r
}
