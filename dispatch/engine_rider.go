package dispatch

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/understudy/understudy/dispatch/supply"
)

// RequestRide creates a searching ride for riderID and queues it for matching.
func (e *Engine) RequestRide(ctx context.Context, riderID string, pickup, dropoff Point) (Ride, error) {
	if err := e.checkOpen(); err != nil {
		return Ride{}, err
	}
	if riderID == "" {
		return Ride{}, Errorf(ECodeInvalid, "rider id is required")
	}
	if err := pickup.Validate(); err != nil {
		return Ride{}, fmt.Errorf("pickup: %w", err)
	}
	if err := dropoff.Validate(); err != nil {
		return Ride{}, fmt.Errorf("dropoff: %w", err)
	}
	now := e.Now()
	route := e.Config.Fare.RouteM(pickup, dropoff)
	r := Ride{
		ID: newID("r"), RiderID: riderID, Status: RideSearching,
		Pickup: pickup, Dropoff: dropoff,
		Fare: e.Config.Fare.Price(route), DistanceM: math.Round(route),
		SearchDeadline: now.Add(e.Config.MaxSearch), CreatedAt: now, UpdatedAt: now,
	}
	if err := e.commit(ctx, Tx{Rides: []Ride{r}}); err != nil {
		return Ride{}, fmt.Errorf("create ride: %w", err)
	}
	r.Version++
	e.mu.Lock()
	e.watchLocked(timer{at: r.SearchDeadline, rideID: r.ID})
	e.enqueueLocked(r.ID)
	e.mu.Unlock()
	e.poke()
	e.Notifier.Notify(Event{Type: EventRideChanged, Ride: r, At: now})
	return r, nil
}

// Ride returns the ride with id.
func (e *Engine) Ride(ctx context.Context, id string) (Ride, error) { return e.Store.Ride(ctx, id) }

// Driver returns the driver with id.
func (e *Engine) Driver(ctx context.Context, id string) (Driver, error) {
	return e.Store.Driver(ctx, id)
}

// Estimate quotes a ride from pickup to dropoff and the nearest driver's pickup ETA.
func (e *Engine) Estimate(pickup, dropoff Point) (Estimate, error) {
	if err := pickup.Validate(); err != nil {
		return Estimate{}, fmt.Errorf("pickup: %w", err)
	}
	if err := dropoff.Validate(); err != nil {
		return Estimate{}, fmt.Errorf("dropoff: %w", err)
	}
	m := e.Config.Fare
	route := m.RouteM(pickup, dropoff)
	est := Estimate{Fare: m.Price(route), DistanceM: math.Round(route)}
	if near := e.supply.Nearest(supply.Point(pickup), 1, e.Config.MaxRadiusM, nil, nil); len(near) > 0 {
		eta := int(math.Ceil(m.DurationS(near[0].DistanceM * m.RouteFactor)))
		est.PickupETAS = &eta
	}
	return est, nil
}

// CancelRide cancels a ride that is searching, matched or arrived, revoking its offer
// or freeing its driver. A trip in progress is ended by its driver and any other final
// ride is ErrIllegalTransition; cancelling a cancelled ride returns it unchanged.
//
// A cancel after the driver arrived owes the driver the cancellation fee: the fee is
// claimed on the ride in a commit of its own (a racing start then loses), written to
// the ledger, and only then the ride is cancelled, so the fee is durable before the
// cancel is answered and written once however the cancel is retried. A cancel that
// stops on the way is finished by a retry, by Step or at the next Open.
func (e *Engine) CancelRide(ctx context.Context, id string) (Ride, error) {
	return e.retry(ctx, func(now time.Time) (Ride, func(), error) {
		r, err := e.Store.Ride(ctx, id)
		if err != nil {
			return Ride{}, nil, err
		}
		switch {
		case r.Status == RideCancelled:
			// A retried or racing cancel; the first may have stopped between the Store
			// and the ride log (its fee was durable before the ride was cancelled).
			if err := e.settle(ctx, r); err != nil {
				return Ride{}, nil, err
			}
			return r, nil, nil
		case r.Status == RideInProgress:
			return Ride{}, nil, wrapf(ErrIllegalTransition, "ride %s is in progress: its driver ends it", id)
		case r.Status == RideArrived && r.CancelFeeAt.IsZero() && e.Config.Fare.CancellationFee > 0:
			r.CancelFeeAt, r.UpdatedAt = now, now
			if err := e.commit(ctx, Tx{Rides: []Ride{r}}); err != nil {
				return Ride{}, nil, err
			}
			r.Version++
		}
		if !r.CancelFeeAt.IsZero() {
			if _, err := e.record(ctx, feeEntry(r, e.cancellationFee(r), e.Region, e.Now())); err != nil {
				e.unsettle(r.ID)
				return Ride{}, nil, err
			}
		}
		var (
			tx     = Tx{}
			events []Event
			freed  *Driver
		)
		offer := r.Offer
		if err := r.moveTo(RideCancelled, now); err != nil {
			return Ride{}, nil, err
		}
		if !r.CancelFeeAt.IsZero() {
			r.EndedAt = r.CancelFeeAt // as the fee's entry says
		}
		driverID := r.DriverID
		if offer != nil {
			driverID = offer.DriverID
		}
		if driverID != "" {
			d, err := e.Store.Driver(ctx, driverID)
			if err != nil {
				return Ride{}, nil, fmt.Errorf("load driver %s: %w", driverID, err)
			}
			if d.RideID == r.ID {
				if err := d.moveTo(DriverAvailable, now); err != nil {
					return Ride{}, nil, err
				}
				tx.Drivers = append(tx.Drivers, d)
				freed = &d
				if offer != nil {
					events = append(events, Event{Type: EventOfferRevoked, DriverID: d.ID, Offer: offer, Reason: ReasonCancelled})
				} else {
					events = append(events, Event{Type: EventRideCancelled, DriverID: d.ID})
				}
			}
		}
		tx.Rides = append(tx.Rides, r)
		release := func() {}
		if freed != nil {
			release, err = e.commitFor(ctx, freed.ID, tx, e.commit)
		} else {
			err = e.commit(ctx, tx)
		}
		if err != nil {
			if !r.CancelFeeAt.IsZero() {
				e.unsettle(r.ID)
			}
			return Ride{}, nil, err
		}
		r.Version++
		return r, func() {
			if offer != nil {
				e.Metrics.OfferOutcome(OutcomeRevoked)
			}
			e.Metrics.RideEnded(RideCancelled)
			e.publish(r, now, events...)
			release()
			if freed != nil {
				e.makeAvailable(*freed) // only once it has heard of the cancel
			}
		}, nil
	})
}
