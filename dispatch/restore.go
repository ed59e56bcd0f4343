package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/understudy/understudy/dispatch/supply"
)

// restore refills an empty Store (its Redis was lost or flushed, or the in-memory
// store of a crashed process) from the log: every ride it lacks, as last logged and at
// its logged version, with the drivers that active rides bind. Versions go on from
// there, so they only grow across a restore: a rider's event stream resumed with an
// id from before it gets exactly the changes that followed, and the log's duplicate
// detection (by ride and version) never mistakes a new change for an old one. An
// outstanding offer is not restored: the ride searches again. A Store holding any
// driver or active ride is left as it is.
func (e *Engine) restore(ctx context.Context) error {
	if e.Log == nil {
		return nil
	}
	if empty, err := e.storeIsEmpty(ctx); err != nil || !empty {
		return err
	}
	now := e.Now()
	restored := 0
	err := e.Log.Latest(ctx, func(r Ride) error {
		// "Empty" means no driver and no active ride: finished rides may still be
		// there (Redis keeps them), and they stay as they are.
		if _, err := e.Store.Ride(ctx, r.ID); !errors.Is(err, ErrRideNotFound) {
			return err // nil when present
		}
		r.Offer = nil
		tx := Tx{Restore: []Ride{r}}
		if !r.Status.Final() && r.Status != RideSearching && r.DriverID != "" {
			state := DriverEnRoute
			if r.Status == RideInProgress {
				state = DriverOnTrip
			}
			d, err := e.Store.Driver(ctx, r.DriverID)
			switch {
			case errors.Is(err, ErrDriverNotFound):
				tx.Drivers = []Driver{{ID: r.DriverID, State: state, RideID: r.ID, UpdatedAt: now}}
			case err != nil:
				return err
			case d.RideID != r.ID:
				d.State, d.RideID, d.OfferID, d.UpdatedAt = state, r.ID, "", now
				tx.Drivers = []Driver{d}
			}
		}
		switch err := e.write(ctx, tx); {
		case errors.Is(err, ErrVersionConflict):
			return nil // another replica starting at the same time restored it
		case err != nil:
			return fmt.Errorf("restore ride %s: %w", r.ID, err)
		}
		restored++
		return nil
	})
	if err != nil {
		return fmt.Errorf("restore from the ride log: %w", err)
	}
	if restored > 0 {
		e.Logger.Warn("restored rides from the log into an empty store", slog.Int("rides", restored))
	}
	return nil
}

// errStop ends a Store listing early.
var errStop = errors.New("stop")

// storeIsEmpty reports whether the Store holds no driver and no active ride.
func (e *Engine) storeIsEmpty(ctx context.Context) (bool, error) {
	seen := func(Driver) error { return errStop }
	if err := e.Store.Drivers(ctx, seen); errors.Is(err, errStop) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("look at the store: %w", err)
	}
	if err := e.Store.ActiveRides(ctx, func(Ride) error { return errStop }); errors.Is(err, errStop) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("look at the store: %w", err)
	}
	return true, nil
}

// rebuild refills the supply index, the pending queue and the timers from the Store.
func (e *Engine) rebuild(ctx context.Context) error {
	err := e.Store.Drivers(ctx, func(d Driver) error {
		if d.State == DriverAvailable && d.Location != nil {
			e.supply.Upsert(d.ID, supply.Point(*d.Location))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("rebuild drivers: %w", err)
	}
	err = e.Store.ActiveRides(ctx, func(r Ride) error {
		if r.Status != RideSearching {
			return nil
		}
		e.timers.watch(timer{at: r.SearchDeadline, rideID: r.ID})
		if r.Offer != nil {
			e.timers.watch(timer{at: r.Offer.ExpiresAt, rideID: r.ID, offerID: r.Offer.ID})
		} else {
			e.matcher.enqueue(r.ID)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("rebuild rides: %w", err)
	}
	return nil
}
