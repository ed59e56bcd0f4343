package dispatch

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"math"
	"time"
)

// fire handles one due timer: an offer expiry or a search deadline.
func (e *Engine) fire(ctx context.Context, t timer, now time.Time) error {
	_, err := e.retry(ctx, func(now time.Time) (Ride, func(), error) {
		r, err := e.Store.Ride(ctx, t.rideID)
		if err != nil {
			if errors.Is(err, ErrRideNotFound) {
				return Ride{}, nil, nil
			}
			return Ride{}, nil, err
		}
		if r.Status != RideSearching {
			return Ride{}, nil, nil
		}
		if t.offerID != "" { // offer expiry
			if r.Offer == nil || r.Offer.ID != t.offerID {
				return Ride{}, nil, nil // answered already
			}
			d, err := e.Store.Driver(ctx, r.Offer.DriverID)
			if err != nil {
				return Ride{}, nil, err
			}
			if d.OfferID != t.offerID {
				return Ride{}, nil, fmt.Errorf("offer %s: driver %s holds %q instead", t.offerID, d.ID, d.OfferID)
			}
			return e.revoke(ctx, d, r, ReasonExpired, now)
		}
		if now.Before(r.SearchDeadline) {
			return Ride{}, nil, nil
		}
		return e.endSearch(ctx, r, now)
	})
	return err
}

// endSearch ends a searching ride as no_driver, revoking any outstanding offer.
func (e *Engine) endSearch(ctx context.Context, r Ride, now time.Time) (Ride, func(), error) {
	offer := r.Offer
	tx := Tx{}
	var freed *Driver
	if offer != nil {
		d, err := e.Store.Driver(ctx, offer.DriverID)
		if err != nil {
			return Ride{}, nil, err
		}
		if d.OfferID == offer.ID {
			if err := d.moveTo(DriverAvailable, now); err != nil {
				return Ride{}, nil, err
			}
			tx.Drivers = append(tx.Drivers, d)
			freed = &d
		}
	}
	if err := r.moveTo(RideNoDriver, now); err != nil {
		return Ride{}, nil, err
	}
	tx.Rides = append(tx.Rides, r)
	if err := e.commit(ctx, tx); err != nil {
		return Ride{}, nil, err
	}
	r.Version++
	return r, func() {
		var evs []Event
		if freed != nil {
			e.makeAvailable(*freed)
			e.Metrics.OfferOutcome(OutcomeRevoked)
			evs = append(evs, Event{Type: EventOfferRevoked, DriverID: freed.ID, Offer: offer, Reason: ReasonTaken})
		}
		e.Metrics.RideEnded(RideNoDriver)
		e.publish(r, now, evs...)
	}, nil
}

// matchPending assigns the batch of pending rides to nearby available drivers and
// sends one offer per assigned ride. Rides that got none stay pending.
func (e *Engine) matchPending(ctx context.Context, now time.Time) error {
	ids := e.takePending()
	if len(ids) == 0 {
		return nil
	}
	start := time.Now()
	rides := make([]Ride, 0, len(ids))
	for _, id := range ids {
		r, err := e.Store.Ride(ctx, id)
		if err != nil {
			if !errors.Is(err, ErrRideNotFound) {
				e.requeue(id)
				return fmt.Errorf("load pending ride %s: %w", id, err)
			}
			continue
		}
		if r.Status == RideSearching && r.Offer == nil {
			rides = append(rides, r)
		}
	}
	var (
		edges   []Edge
		drivers []Candidate
		index   = make(map[string]int)
		buf     []Candidate
	)
	for i := range rides {
		r := &rides[i]
		var skip func(string) bool
		if len(r.Declined) > 0 {
			skip = r.hasDeclined
		}
		buf = e.supply.Nearest(r.Pickup, e.Config.Candidates, e.Config.MaxRadiusM, skip, buf)
		for _, c := range buf {
			j, ok := index[c.DriverID]
			if !ok {
				j = len(drivers)
				index[c.DriverID] = j
				drivers = append(drivers, c)
			}
			edges = append(edges, Edge{Ride: i, Driver: j, Cost: c.DistanceM})
		}
	}
	assignment := Assign(len(rides), len(drivers), edges)
	cost := make(map[[2]int]float64, len(edges))
	for _, ed := range edges {
		cost[[2]int{ed.Ride, ed.Driver}] = ed.Cost
	}
	offered := 0
	var errs []error
	for i, j := range assignment {
		r := rides[i]
		if j < 0 {
			e.requeue(r.ID)
			continue
		}
		if err := e.offer(ctx, r, drivers[j].DriverID, cost[[2]int{i, j}], now); err != nil {
			if ErrorCode(err) == ECodeInternal {
				errs = append(errs, err)
			}
			e.requeue(r.ID)
			continue
		}
		offered++
	}
	e.Metrics.BatchSolved(len(rides), offered, time.Since(start))
	return errors.Join(errs...)
}

// offer claims driverID for ride r in one commit and sends the offer.
func (e *Engine) offer(ctx context.Context, r Ride, driverID string, pickupM float64, now time.Time) error {
	d, err := e.Store.Driver(ctx, driverID)
	if err != nil {
		return fmt.Errorf("claim driver %s: %w", driverID, err)
	}
	if d.State != DriverAvailable {
		e.supply.Remove(driverID) // the index was stale
		return wrapf(ErrDriverBusy, "claim driver %s", driverID)
	}
	o := Offer{
		ID: newID("o"), RideID: r.ID, DriverID: driverID,
		Pickup: r.Pickup, Dropoff: r.Dropoff, Fare: r.Fare, PickupM: math.Round(pickupM),
		CreatedAt: now, ExpiresAt: now.Add(e.Config.OfferTimeout),
	}
	if err := d.moveTo(DriverOffered, now); err != nil {
		return err
	}
	d.OfferID, d.RideID = o.ID, r.ID
	r.Offer = &o
	r.UpdatedAt = now
	if err := e.commit(ctx, Tx{Drivers: []Driver{d}, Rides: []Ride{r}}); err != nil {
		return fmt.Errorf("claim driver %s for ride %s: %w", driverID, r.ID, err)
	}
	r.Version++
	e.supply.Remove(driverID)
	e.mu.Lock()
	heap.Push(&e.timers, timer{at: o.ExpiresAt, rideID: r.ID, offerID: o.ID})
	_, seen := e.firstOff[r.ID]
	if !seen {
		e.firstOff[r.ID] = now
	}
	e.mu.Unlock()
	if !seen {
		e.Metrics.MatchLatency(now.Sub(r.CreatedAt))
	}
	e.Notifier.Notify(Event{Type: EventOffer, DriverID: driverID, Ride: r, Offer: &o, At: now})
	return nil
}
