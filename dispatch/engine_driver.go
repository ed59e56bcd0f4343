package dispatch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/understudy/understudy/dispatch/supply"
)

// Connect registers driverID (as offline, the first time) and returns where it stands,
// for the gateway's welcome frame. It undoes Disconnect: an available driver is back
// in the supply index.
func (e *Engine) Connect(ctx context.Context, driverID string) (Driver, error) {
	if driverID == "" {
		return Driver{}, Errorf(ECodeInvalid, "driver id is required")
	}
	e.mu.Lock()
	e.presence[driverID] = presenceHere
	e.mu.Unlock()
	e.peer(Event{Type: EventDriverConnected, DriverID: driverID})
	d, err := e.Store.Driver(ctx, driverID)
	if err == nil {
		e.makeAvailable(d)
	}
	if !errors.Is(err, ErrDriverNotFound) {
		return d, err
	}
	now := e.Now()
	d = Driver{ID: driverID, State: DriverOffline, UpdatedAt: now}
	switch err := e.commit(ctx, Tx{Drivers: []Driver{d}}); {
	case errors.Is(err, ErrVersionConflict): // created concurrently
		return e.Store.Driver(ctx, driverID)
	case err != nil:
		return Driver{}, fmt.Errorf("register driver %s: %w", driverID, err)
	}
	d.Version++
	return d, nil
}

// Disconnect says driverID's app cannot hear offers for now (its socket dropped): the
// driver keeps its state, offer and ride, but is offered nothing until Connect. It
// touches no Store, so a gateway may call it while holding its own lock.
func (e *Engine) Disconnect(driverID string) {
	e.mu.Lock()
	e.presence[driverID] = presenceAway
	e.mu.Unlock()
	e.supply.Remove(driverID)
	e.peer(Event{Type: EventDriverAway, DriverID: driverID}) // out of supply too
}

// UpdateLocation records driverID's position and moves it in the supply index. The
// index entry follows the stored state, so a location update also heals an index that
// a race between a claim and an answer left stale.
func (e *Engine) UpdateLocation(ctx context.Context, driverID string, p Point) error {
	if err := p.Validate(); err != nil {
		return err
	}
	state, err := e.Store.SetLocation(ctx, driverID, p, e.Now())
	if err != nil {
		return fmt.Errorf("set location of %s: %w", driverID, err)
	}
	if state == DriverAvailable {
		switch {
		case e.supply.Move(driverID, supply.Point(p)):
			if e.Peers != nil {
				loc := p // escapes: a lone engine (no Peers) does not pay for it
				e.peer(Event{Type: EventSupply, DriverID: driverID, Location: &loc})
			}
		case !e.isAway(driverID):
			e.supplyIn(driverID, p)
			e.poke()
		}
	} else {
		e.supplyOut(driverID, false)
	}
	return nil
}

// SetAvailable makes driverID ready for offers. It needs a known location. Already
// available (or busy with an offer or ride) is not an error: the state is returned.
func (e *Engine) SetAvailable(ctx context.Context, driverID string) (Driver, error) {
	var out Driver
	_, err := e.retry(ctx, func(now time.Time) (Ride, func(), error) {
		d, err := e.Store.Driver(ctx, driverID)
		if err != nil {
			return Ride{}, nil, err
		}
		if d.State != DriverOffline {
			out = d
			if d.State == DriverAvailable && d.Location != nil {
				return Ride{}, func() { e.supplyIn(d.ID, *d.Location) }, nil
			}
			return Ride{}, nil, nil
		}
		if d.Location == nil {
			return Ride{}, nil, Errorf(ECodeConflict, "send a location before going available")
		}
		d.MissedOffers = 0
		if err := d.moveTo(DriverAvailable, now); err != nil {
			return Ride{}, nil, err
		}
		if err := e.commit(ctx, Tx{Drivers: []Driver{d}}); err != nil {
			return Ride{}, nil, err
		}
		d.Version++
		out = d
		return Ride{}, func() { e.makeAvailable(d) }, nil
	})
	return out, err
}

// SetOffline stops offers to driverID; an outstanding offer counts as declined. A
// driver with an assigned ride must finish (or the rider cancel) first.
//
// A replica that knows the driver's app is connected to another replica of the region
// leaves it as it is: the call can only be its gateway ending the grace period of a
// socket the driver has since replaced with one elsewhere.
func (e *Engine) SetOffline(ctx context.Context, driverID string) (Driver, error) {
	if e.presenceOf(driverID) == presenceElsewhere {
		return e.Store.Driver(ctx, driverID)
	}
	var out Driver
	_, err := e.retry(ctx, func(now time.Time) (Ride, func(), error) {
		d, err := e.Store.Driver(ctx, driverID)
		if err != nil {
			return Ride{}, nil, err
		}
		switch d.State {
		case DriverOffline:
			out = d
			return Ride{}, nil, nil
		case DriverOffered:
			out = d
			_ = out.moveTo(DriverOffline, now) // the state answerDecline commits
			return e.answerDecline(ctx, d, d.OfferID, now, DriverOffline)
		}
		if err := d.moveTo(DriverOffline, now); err != nil {
			return Ride{}, nil, err
		}
		if err := e.commit(ctx, Tx{Drivers: []Driver{d}}); err != nil {
			return Ride{}, nil, err
		}
		d.Version++
		out = d
		return Ride{}, func() { e.supplyOut(d.ID, true) }, nil
	})
	return out, err
}

// Accept answers driverID's offer: the ride becomes matched to the driver. Exactly one
// of a racing accept, expiry and rider cancel wins; a lost accept is ErrOfferExpired
// and the driver hears offer_revoked.
func (e *Engine) Accept(ctx context.Context, driverID, offerID string) (Ride, error) {
	return e.retry(ctx, func(now time.Time) (Ride, func(), error) {
		d, r, err := e.loadOffer(ctx, driverID, offerID)
		if err != nil {
			return Ride{}, nil, err
		}
		offer := r.Offer
		if !now.Before(offer.ExpiresAt) {
			// Too late: expire it here so the answer and the revocation agree.
			_, after, err := e.revoke(ctx, d, r, ReasonExpired, now)
			if err != nil {
				return Ride{}, nil, err
			}
			return Ride{}, after, wrapf(ErrOfferExpired, "offer %s expired", offerID)
		}
		if err := r.moveTo(RideMatched, now); err != nil {
			return Ride{}, nil, err
		}
		r.DriverID = d.ID
		if err := d.moveTo(DriverEnRoute, now); err != nil {
			return Ride{}, nil, err
		}
		d.RideID, d.MissedOffers = r.ID, 0
		release, err := e.commitFor(ctx, d.ID, Tx{Drivers: []Driver{d}, Rides: []Ride{r}}, e.commit)
		if err != nil {
			return Ride{}, nil, err
		}
		r.Version++
		return r, func() {
			e.Metrics.OfferOutcome(OutcomeAccepted)
			e.publish(r, now, Event{Type: EventAssigned, DriverID: d.ID})
			release()
		}, nil
	})
}

// Decline answers driverID's offer with no; the ride cascades to the next driver.
func (e *Engine) Decline(ctx context.Context, driverID, offerID string) error {
	_, err := e.retry(ctx, func(now time.Time) (Ride, func(), error) {
		d, err := e.Store.Driver(ctx, driverID)
		if err != nil {
			return Ride{}, nil, err
		}
		return e.answerDecline(ctx, d, offerID, now, DriverAvailable)
	})
	return err
}

// answerDecline turns d's offer down and moves d to next (available or offline).
func (e *Engine) answerDecline(ctx context.Context, d Driver, offerID string, now time.Time, next DriverState) (Ride, func(), error) {
	_, r, err := e.loadOffer(ctx, d.ID, offerID)
	if err != nil {
		return Ride{}, nil, err
	}
	r.Offer = nil
	r.Declined = append(r.Declined, d.ID)
	r.UpdatedAt = now
	d.MissedOffers = 0 // an answer, if a no
	if err := d.moveTo(next, now); err != nil {
		return Ride{}, nil, err
	}
	if err := e.commit(ctx, Tx{Drivers: []Driver{d}, Rides: []Ride{r}}); err != nil {
		return Ride{}, nil, err
	}
	r.Version++
	return r, func() {
		e.Metrics.OfferOutcome(OutcomeDeclined)
		if next == DriverAvailable {
			e.makeAvailable(d)
		} else {
			e.supplyOut(d.ID, true)
		}
		e.requeue(r.ID)
	}, nil
}

// Arrived, Start and Complete report trip progress. Repeating a step that already
// happened returns the ride unchanged, so a retried frame is harmless.
func (e *Engine) Arrived(ctx context.Context, driverID, rideID string) (Ride, error) {
	return e.progress(ctx, driverID, rideID, RideArrived, DriverEnRoute)
}

// Start: the rider is on board.
func (e *Engine) Start(ctx context.Context, driverID, rideID string) (Ride, error) {
	return e.progress(ctx, driverID, rideID, RideInProgress, DriverOnTrip)
}

// Complete: the trip is over; the driver is available again.
func (e *Engine) Complete(ctx context.Context, driverID, rideID string) (Ride, error) {
	return e.progress(ctx, driverID, rideID, RideCompleted, DriverAvailable)
}

func (e *Engine) progress(ctx context.Context, driverID, rideID string, to RideStatus, driverTo DriverState) (Ride, error) {
	return e.retry(ctx, func(now time.Time) (Ride, func(), error) {
		r, err := e.Store.Ride(ctx, rideID)
		if err != nil {
			return Ride{}, nil, err
		}
		if r.DriverID != driverID {
			if r.Offer != nil && r.Offer.DriverID == driverID {
				return Ride{}, nil, wrapf(ErrIllegalTransition, "ride %s is only offered to driver %s: accept it first", rideID, driverID)
			}
			return Ride{}, nil, wrapf(ErrRideNotFound, "ride %s is not assigned to driver %s", rideID, driverID)
		}
		if r.Status == to {
			// A retried frame. For complete, the first try may have stopped between
			// the Store and the ride log: settle writes what is missing.
			if to == RideCompleted {
				if err := e.settle(ctx, r); err != nil {
					return Ride{}, nil, err
				}
			}
			return r, nil, nil
		}
		if to == RideInProgress && !r.CancelFeeAt.IsZero() {
			return Ride{}, nil, wrapf(ErrIllegalTransition, "ride %s was cancelled by its rider", rideID)
		}
		d, err := e.Store.Driver(ctx, driverID)
		if err != nil {
			return Ride{}, nil, err
		}
		if err := r.moveTo(to, now); err != nil {
			return Ride{}, nil, err
		}
		var drivers []Driver
		if d.State != driverTo {
			if err := d.moveTo(driverTo, now); err != nil {
				return Ride{}, nil, err
			}
			if driverTo != DriverAvailable {
				d.RideID = r.ID
			}
			drivers = []Driver{d}
		}
		if to == RideCompleted {
			// The trip's entry comes first, durable before the ride is completed
			// anywhere: so no completed ride lacks its entry, and since a trip in
			// progress can only end completed, an entry always means a ride that will
			// be. A commit that fails after it is finished by the driver's retry, by
			// Step (unsettled) or at the next Open.
			entry, err := e.record(ctx, tripEntry(r, e.Region, now))
			if err != nil {
				return Ride{}, nil, err
			}
			r.EndedAt = entry.CompletedAt // as first recorded, if an earlier try did
		}
		if err := e.commit(ctx, Tx{Drivers: drivers, Rides: []Ride{r}}); err != nil {
			if to == RideCompleted {
				e.unsettle(r.ID)
			}
			return Ride{}, nil, err
		}
		r.Version++
		return r, func() {
			if driverTo == DriverAvailable {
				e.makeAvailable(d)
				e.Metrics.RideEnded(to)
			}
			e.publish(r, now)
		}, nil
	})
}

// loadOffer returns driverID and the ride of its current offer offerID.
func (e *Engine) loadOffer(ctx context.Context, driverID, offerID string) (Driver, Ride, error) {
	d, err := e.Store.Driver(ctx, driverID)
	if err != nil {
		return Driver{}, Ride{}, err
	}
	if offerID == "" {
		return Driver{}, Ride{}, Errorf(ECodeInvalid, "offer_id is required")
	}
	if d.State != DriverOffered || d.OfferID != offerID {
		return Driver{}, Ride{}, wrapf(ErrOfferExpired, "offer %s is not outstanding for driver %s", offerID, driverID)
	}
	r, err := e.Store.Ride(ctx, d.RideID)
	if err != nil {
		return Driver{}, Ride{}, fmt.Errorf("load ride of offer %s: %w", offerID, err)
	}
	if r.Offer == nil || r.Offer.ID != offerID {
		return Driver{}, Ride{}, wrapf(ErrOfferExpired, "offer %s no longer stands", offerID)
	}
	return d, r, nil
}

// revoke withdraws r's offer from d, frees d and requeues r (when still searching).
func (e *Engine) revoke(ctx context.Context, d Driver, r Ride, reason string, now time.Time) (Ride, func(), error) {
	offer := r.Offer
	r.Offer = nil
	r.UpdatedAt = now
	next := DriverAvailable
	if reason == ReasonExpired {
		r.Declined = append(r.Declined, d.ID)
		// A driver who lets offer after offer expire is most likely gone (app killed,
		// phone dead, its replica died): take it offline so riders stop waiting on it.
		d.MissedOffers++
		if max := e.Config.MaxMissedOffers; max > 0 && d.MissedOffers >= max {
			next, d.MissedOffers = DriverOffline, 0
		}
	}
	if err := d.moveTo(next, now); err != nil {
		return Ride{}, nil, err
	}
	release, err := e.commitFor(ctx, d.ID, Tx{Drivers: []Driver{d}, Rides: []Ride{r}}, e.commit)
	if err != nil {
		return Ride{}, nil, err
	}
	r.Version++
	return r, func() {
		e.Metrics.OfferOutcome(OutcomeExpired)
		e.Notifier.Notify(Event{Type: EventOfferRevoked, DriverID: d.ID, Ride: r, Offer: offer, Reason: reason, At: now})
		if next == DriverOffline {
			e.Notifier.Notify(Event{Type: EventDriverOffline, DriverID: d.ID, Reason: ReasonMissedOffers, At: now})
		}
		release()
		// Only now may the driver be offered another ride: it has heard of this one.
		e.makeAvailable(d)
		e.requeue(r.ID)
	}, nil
}
