package dispatch

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/understudy/understudy/dispatch/assign"
	"github.com/understudy/understudy/dispatch/supply"
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
	release := func() {}
	if freed != nil {
		var err error
		if release, err = e.commitFor(ctx, freed.ID, tx, e.commit); err != nil {
			return Ride{}, nil, err
		}
	} else if err := e.commit(ctx, tx); err != nil {
		return Ride{}, nil, err
	}
	r.Version++
	return r, func() {
		var evs []Event
		if freed != nil {
			e.Metrics.OfferOutcome(OutcomeRevoked)
			evs = append(evs, Event{Type: EventOfferRevoked, DriverID: freed.ID, Offer: offer, Reason: ReasonTaken})
		}
		e.Metrics.RideEnded(RideNoDriver)
		e.publish(r, now, evs...)
		release()
		if freed != nil {
			e.makeAvailable(*freed) // once it has heard
		}
	}, nil
}

// maxRounds bounds how often one tick re-batches the rides its earlier rounds left
// without a driver. A claim removes the driver from the supply index, so each round
// sees fresh candidates: rides that all listed the same few drivers near a hub get
// the next ones within the same tick instead of a tick later.
const maxRounds = 4

// matchPending assigns the batch of pending rides to nearby available drivers and
// sends one offer per assigned ride. Rides that got none stay pending.
func (e *Engine) matchPending(ctx context.Context, now time.Time) error {
	ids := e.takePending()
	if len(ids) == 0 {
		return nil
	}
	start := time.Now()
	rides := make([]Ride, 0, len(ids))
	for k, id := range ids {
		r, err := e.Store.Ride(ctx, id)
		if err != nil {
			if !errors.Is(err, ErrRideNotFound) {
				for _, id := range ids[k:] {
					e.requeue(id)
				}
				return fmt.Errorf("load pending ride %s: %w", id, err)
			}
			continue
		}
		if r.Status == RideSearching && r.Offer == nil {
			rides = append(rides, r)
		}
	}
	total, offered := len(rides), 0
	var errs []error
	for round := 0; round < maxRounds && len(rides) > 0; round++ {
		left, n, err := e.matchRound(ctx, rides, now)
		if err != nil {
			errs = append(errs, err)
		}
		offered += n
		rides = left
		if n == 0 {
			break
		}
	}
	for _, r := range rides {
		e.requeue(r.ID)
	}
	e.Metrics.BatchSolved(total, offered, time.Since(start))
	return errors.Join(errs...)
}

// matchRound solves one optimal assignment of rides to their nearest available
// drivers and sends the offers. It returns the rides still without an offer whose
// driver may yet be found this tick; rides whose claim failed otherwise go back to
// the queue.
func (e *Engine) matchRound(ctx context.Context, rides []Ride, now time.Time) (left []Ride, offered int, err error) {
	var (
		edges   []assign.Edge
		drivers []supply.Candidate
		index   = make(map[string]int)
		buf     []supply.Candidate
		first   = make([]int, len(rides)+1) // edges of ride i are edges[first[i]:first[i+1]]
	)
	for i := range rides {
		r := &rides[i]
		first[i] = len(edges)
		var skip func(string) bool
		if len(r.Declined) > 0 {
			skip = r.hasDeclined
		}
		buf = e.supply.Nearest(supply.Point(r.Pickup), e.Config.Candidates, e.Config.MaxRadiusM, skip, buf)
		for _, c := range buf {
			j, ok := index[c.DriverID]
			if !ok {
				j = len(drivers)
				index[c.DriverID] = j
				drivers = append(drivers, c)
			}
			edges = append(edges, assign.Edge{Ride: i, Driver: j, Cost: c.DistanceM})
		}
	}
	first[len(rides)] = len(edges)
	var errs []error
	for i, j := range assign.Solve(len(rides), len(drivers), edges) {
		r := rides[i]
		if j < 0 {
			left = append(left, r)
			continue
		}
		var pickupM float64
		for _, ed := range edges[first[i]:first[i+1]] {
			if ed.Driver == j {
				pickupM = ed.Cost
			}
		}
		switch err := e.offer(ctx, r, drivers[j].DriverID, pickupM, now); {
		case err == nil:
			offered++
		case errors.Is(err, ErrDriverBusy):
			left = append(left, r) // the index was stale; try the next driver
		default:
			if ErrorCode(err) == ECodeInternal {
				errs = append(errs, err)
			}
			e.requeue(r.ID) // e.g. cancelled meanwhile: the next tick rereads it
		}
	}
	return left, offered, errors.Join(errs...)
}

// offer claims driverID for ride r in one commit and sends the offer.
func (e *Engine) offer(ctx context.Context, r Ride, driverID string, pickupM float64, now time.Time) error {
	d, err := e.Store.Driver(ctx, driverID)
	if err != nil {
		return fmt.Errorf("claim driver %s: %w", driverID, err)
	}
	if d.State != DriverAvailable {
		e.supplyOut(driverID, true) // the index was stale, and so may the others' be
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
	release, err := e.commitFor(ctx, driverID, Tx{Drivers: []Driver{d}, Rides: []Ride{r}}, e.claim)
	if err != nil {
		return fmt.Errorf("claim driver %s for ride %s: %w", driverID, r.ID, err)
	}
	defer release()
	r.Version++
	e.supplyOut(driverID, true)
	e.mu.Lock()
	e.watchLocked(timer{at: o.ExpiresAt, rideID: r.ID, offerID: o.ID})
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
