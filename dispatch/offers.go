package dispatch

import (
	"context"
	"fmt"
	"time"
)

// Accept answers driverID's offer: the ride becomes matched to the driver. Exactly one
// of a racing accept, expiry and rider cancel wins; a lost accept is ErrOfferExpired
// and the driver hears offer_revoked.
func (ds Drivers) Accept(ctx context.Context, driverID, offerID string) (Ride, error) {
	e := ds.e
	expired := false
	c, err := e.apply(ctx, func(now time.Time) (change, error) {
		d, r, err := e.loadOffer(ctx, driverID, offerID)
		if err != nil {
			return change{}, err
		}
		if expired = !now.Before(r.Offer.ExpiresAt); expired {
			// Too late: expire it here so the answer and the revocation agree.
			return e.revoke(d, r, now)
		}
		if err := r.moveTo(RideMatched, now); err != nil {
			return change{}, err
		}
		r.DriverID = d.ID
		if err := d.moveTo(DriverEnRoute, now); err != nil {
			return change{}, err
		}
		d.RideID, d.MissedOffers = r.ID, 0
		c := change{driver: d, ride: r, changed: true, outcome: OutcomeAccepted}
		c.tell(Event{Type: EventAssigned, DriverID: d.ID})
		return c, nil
	})
	switch {
	case err != nil:
		return Ride{}, err
	case expired:
		return Ride{}, wrapf(ErrOfferExpired, "offer %s expired", offerID)
	}
	return c.ride, nil
}

// Decline answers driverID's offer with no; the ride cascades to the next driver.
func (ds Drivers) Decline(ctx context.Context, driverID, offerID string) error {
	_, err := ds.e.apply(ctx, func(now time.Time) (change, error) {
		return ds.e.decline(ctx, driverID, offerID, DriverAvailable, now)
	})
	return err
}

// decline turns driverID's offer offerID down and moves the driver to next (available,
// or offline when it goes offline with an offer out).
func (e *Engine) decline(ctx context.Context, driverID, offerID string, next DriverState, now time.Time) (change, error) {
	d, r, err := e.loadOffer(ctx, driverID, offerID)
	if err != nil {
		return change{}, err
	}
	d.MissedOffers = 0 // an answer, if a no
	r.Offer = nil
	r.Declined = append(r.Declined, driverID)
	r.UpdatedAt = now
	c := change{ride: r, requeue: true, outcome: OutcomeDeclined}
	if err := release(&c, d, next, now, Event{}); err != nil {
		return change{}, err
	}
	return c, nil
}

// loadOffer returns driverID and the ride of its current offer offerID.
func (e *Engine) loadOffer(ctx context.Context, driverID, offerID string) (Driver, Ride, error) {
	if offerID == "" {
		return Driver{}, Ride{}, Errorf(ECodeInvalid, "offer_id is required")
	}
	d, err := e.Store.Driver(ctx, driverID)
	if err != nil {
		return Driver{}, Ride{}, err
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

// revoke expires r's offer to d: d is freed (or taken offline after too many offers in
// a row let expire) and r cascades to the next driver.
func (e *Engine) revoke(d Driver, r Ride, now time.Time) (change, error) {
	offer := r.Offer
	r.Offer = nil
	r.UpdatedAt = now
	r.Declined = append(r.Declined, d.ID)
	// A driver who lets offer after offer expire is most likely gone (app killed,
	// phone dead, its replica died): take it offline so riders stop waiting on it.
	next := DriverAvailable
	d.MissedOffers++
	if max := e.Config.MaxMissedOffers; max > 0 && d.MissedOffers >= max {
		next, d.MissedOffers = DriverOffline, 0
	}
	c := change{ride: r, requeue: true, outcome: OutcomeExpired}
	if err := release(&c, d, next, now, Event{Type: EventOfferRevoked, Offer: offer, Reason: ReasonExpired}); err != nil {
		return change{}, err
	}
	if next == DriverOffline {
		c.tell(Event{Type: EventDriverOffline, DriverID: d.ID, Reason: ReasonMissedOffers})
	}
	return c, nil
}
