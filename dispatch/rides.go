package dispatch

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/understudy/understudy/dispatch/supply"
)

// Riders is the engine as the rider API uses it: ride requests, estimates and
// cancels. Get it from Engine.Riders.
type Riders struct{ e *Engine }

// RequestRide creates a searching ride for riderID and queues it for matching.
func (rs Riders) RequestRide(ctx context.Context, riderID string, pickup, dropoff Point) (Ride, error) {
	e := rs.e
	if e.closed.Load() {
		return Ride{}, ErrClosed
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
	area, err := e.Router.Route(pickup)
	if err != nil {
		return Ride{}, err
	}
	now := e.Now()
	route := e.Config.Fare.RouteM(pickup, dropoff)
	r := Ride{
		ID: newID("r"), RiderID: riderID, Status: RideSearching, Area: area,
		Pickup: pickup, Dropoff: dropoff,
		Fare: e.Config.Fare.Price(route), DistanceM: math.Round(route),
		SearchDeadline: now.Add(e.Config.MaxSearch), CreatedAt: now, UpdatedAt: now,
	}
	c := change{ride: r, changed: true, requeue: true, watch: timer{at: r.SearchDeadline, rideID: r.ID}}
	if err := e.commit(ctx, &c, now); err != nil {
		return Ride{}, fmt.Errorf("create ride: %w", err)
	}
	e.poke()
	return c.ride, nil
}

// Ride returns the ride with id. A ride of an area this region does not serve now is
// wrong_region (or no_lease): the copy here may be stale, the serving region has it.
// While this region is taking an area over, a ride it lacks is no_lease too, not
// found: it may be one of the area's, not adopted yet (the region that handed the
// area over sends its riders here at once).
func (rs Riders) Ride(ctx context.Context, id string) (Ride, error) {
	r, err := rs.e.Store.Ride(ctx, id)
	if errors.Is(err, ErrRideNotFound) && rs.e.Router.taking() {
		return Ride{}, &Error{Code: ECodeNoLease, RetryAfterS: noLeaseRetryS,
			Message: "this region is taking an area over and may not have adopted this ride yet: retry shortly"}
	}
	if err != nil {
		return Ride{}, err
	}
	if err := rs.e.Router.RouteArea(r.Area); err != nil {
		return Ride{}, err
	}
	return r, nil
}

// Driver returns the driver with id.
func (rs Riders) Driver(ctx context.Context, id string) (Driver, error) {
	return rs.e.Store.Driver(ctx, id)
}

// Estimate quotes a ride from pickup to dropoff and the nearest driver's pickup ETA.
func (rs Riders) Estimate(pickup, dropoff Point) (Estimate, error) {
	if err := pickup.Validate(); err != nil {
		return Estimate{}, fmt.Errorf("pickup: %w", err)
	}
	if err := dropoff.Validate(); err != nil {
		return Estimate{}, fmt.Errorf("dropoff: %w", err)
	}
	e := rs.e
	if _, err := e.Router.Route(pickup); err != nil {
		return Estimate{}, err
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
func (rs Riders) CancelRide(ctx context.Context, id string) (Ride, error) {
	e := rs.e
	c, err := e.apply(ctx, func(now time.Time) (change, error) {
		r, err := e.Store.Ride(ctx, id)
		if err != nil {
			return change{}, err
		}
		switch {
		case r.Status == RideCancelled:
			// A retried or racing cancel; the first may have stopped between the Store
			// and the ride log (its fee was durable before the ride was cancelled).
			return answer(Driver{}, r), e.settle(ctx, r)
		case r.Status == RideInProgress:
			return change{}, wrapf(ErrIllegalTransition, "ride %s is in progress: its driver ends it", id)
		case r.Status == RideArrived && r.CancelFeeAt.IsZero() && e.Config.Fare.CancellationFee > 0:
			r.CancelFeeAt, r.UpdatedAt = now, now
			claim := change{ride: r}
			if err := e.commit(ctx, &claim, now); err != nil {
				return change{}, err
			}
			r = claim.ride
		}
		c := change{changed: true, paid: !r.CancelFeeAt.IsZero()}
		if c.paid {
			if _, err := e.record(ctx, feeEntry(r, e.cancellationFee(r), e.Region, e.Now())); err != nil {
				e.settler.add(r.ID)
				return change{}, err
			}
		}
		d, ok, err := e.holder(ctx, r)
		if err != nil {
			return change{}, err
		}
		if ok {
			ev := Event{Type: EventRideCancelled}
			if r.Offer != nil {
				ev = Event{Type: EventOfferRevoked, Offer: r.Offer, Reason: ReasonCancelled}
				c.outcome = OutcomeRevoked
			}
			if err := release(&c, d, DriverAvailable, now, ev); err != nil {
				return change{}, err
			}
		}
		if err := r.moveTo(RideCancelled, now); err != nil {
			return change{}, err
		}
		if c.paid {
			r.EndedAt = r.CancelFeeAt // as the fee's entry says
		}
		c.ride = r
		return c, nil
	})
	if err != nil {
		return Ride{}, err
	}
	return c.ride, nil
}
