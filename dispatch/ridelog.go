package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
)

// RideLog is the durable log of ride changes: the record that outlives the hot state.
type RideLog interface {
	// Append durably records rides as they now are.
	Append(ctx context.Context, rides []Ride) error
	// Latest calls fn with the last logged state of every ride.
	Latest(ctx context.Context, fn func(Ride) error) error
}

// restore puts back into the Store every ride the log holds as active but the Store
// has lost (its Redis was lost or flushed), with the drivers those rides bind. An
// outstanding offer is not restored: the ride searches again. It changes nothing
// for rides the Store still has.
func (e *Engine) restore(ctx context.Context) error {
	if e.Log == nil {
		return nil
	}
	now := e.Now()
	restored := 0
	err := e.Log.Latest(ctx, func(r Ride) error {
		if r.Status.Final() {
			return nil
		}
		if _, err := e.Store.Ride(ctx, r.ID); !errors.Is(err, ErrRideNotFound) {
			return err // present (nil) or a real failure
		}
		r.Version, r.Offer = 0, nil
		tx := Tx{Rides: []Ride{r}}
		if r.Status != RideSearching && r.DriverID != "" {
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
		if err := e.claim(ctx, tx); err != nil {
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
