package dispatch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/understudy/understudy/dispatch/supply"
)

// Drivers is the engine as the driver gateway uses it: presence, location and
// availability here, answers to offers in offers.go, trip steps in trips.go. Get it
// from Engine.Drivers.
type Drivers struct{ e *Engine }

// Connect registers driverID (as offline, the first time) and returns where it stands,
// for the gateway's welcome frame. It undoes Disconnect: an available driver is back
// in the supply index.
func (ds Drivers) Connect(ctx context.Context, driverID string) (Driver, error) {
	e := ds.e
	if driverID == "" {
		return Driver{}, Errorf(ECodeInvalid, "driver id is required")
	}
	e.replicas.set(driverID, presenceHere)
	e.peer(PeerEvent{Type: PeerDriverConnected, DriverID: driverID})
	d, err := e.Store.Driver(ctx, driverID)
	if err == nil {
		e.makeAvailable(d)
	}
	if !errors.Is(err, ErrDriverNotFound) {
		return d, err
	}
	now := e.Now()
	d = Driver{ID: driverID, State: DriverOffline, UpdatedAt: now}
	c := change{driver: d}
	switch err := e.commit(ctx, &c, now); {
	case errors.Is(err, ErrVersionConflict): // created concurrently
		return e.Store.Driver(ctx, driverID)
	case err != nil:
		return Driver{}, fmt.Errorf("register driver %s: %w", driverID, err)
	}
	return c.driver, nil
}

// Disconnect says driverID's app cannot hear offers for now (its socket dropped): the
// driver keeps its state, offer and ride, but is offered nothing until Connect. It
// touches no Store, so a gateway may call it while holding its own lock.
func (ds Drivers) Disconnect(driverID string) {
	e := ds.e
	e.replicas.set(driverID, presenceAway)
	e.supply.Remove(driverID)
	e.peer(PeerEvent{Type: PeerDriverAway, DriverID: driverID}) // out of supply too
}

// UpdateLocation records driverID's position and moves it in the supply index. The
// index entry follows the stored state, so a location update also heals an index that
// a race between a claim and an answer left stale.
//
// A driver without an offer or a ride (offline or available) whose location is in an
// area another region serves gets an error with code wrong_region and a Redirect
// there, after its location is recorded: the gateway decides when to send it on
// (hysteresis at the border). A driver with an offer or a ride is never sent on: it
// finishes where it is.
func (ds Drivers) UpdateLocation(ctx context.Context, driverID string, p Point) error {
	e := ds.e
	if err := p.Validate(); err != nil {
		return err
	}
	state, err := e.Store.SetLocation(ctx, driverID, p, e.Now())
	if err != nil {
		return fmt.Errorf("set location of %s: %w", driverID, err)
	}
	ds.updateSupply(driverID, p, state)
	if e.Router != nil && (state == DriverOffline || state == DriverAvailable) {
		if _, err := e.Router.Route(p); ErrorCode(err) == ECodeWrongRegion {
			return err
		}
	}
	return nil
}

// updateSupply moves driverID's supply entry to p, in step with its stored state.
func (ds Drivers) updateSupply(driverID string, p Point, state DriverState) {
	e := ds.e
	if state != DriverAvailable {
		e.supplyOut(driverID, false)
		return
	}
	switch {
	case e.supply.Move(driverID, supply.Point(p)):
		if e.Peers != nil {
			loc := p // escapes: a lone engine (no Peers) does not pay for it
			e.peer(PeerEvent{Type: PeerSupply, DriverID: driverID, Location: &loc})
		}
	case !e.replicas.isAway(driverID):
		e.supplyIn(driverID, p)
		e.poke()
	}
}

// SetAvailable makes driverID ready for offers. It needs a known location. Already
// available (or busy with an offer or ride) is not an error: the state is returned.
func (ds Drivers) SetAvailable(ctx context.Context, driverID string) (Driver, error) {
	e := ds.e
	c, err := e.apply(ctx, func(now time.Time) (change, error) {
		d, err := e.Store.Driver(ctx, driverID)
		if err != nil {
			return change{}, err
		}
		switch {
		case d.State != DriverOffline:
			return answer(d, Ride{}), nil
		case d.Location == nil:
			return change{}, Errorf(ECodeConflict, "send a location before going available")
		}
		d.MissedOffers = 0
		if err := d.moveTo(DriverAvailable, now); err != nil {
			return change{}, err
		}
		return change{driver: d}, nil
	})
	if err != nil {
		return Driver{}, err
	}
	if c.answer {
		e.makeAvailable(c.driver) // in case a race left it out of the index
	}
	return c.driver, nil
}

// SetOffline stops offers to driverID; an outstanding offer counts as declined. A
// driver with an assigned ride must finish (or the rider cancel) first.
//
// A replica that knows the driver's app is connected to another replica of the region
// leaves it as it is: the call can only be its gateway ending the grace period of a
// socket the driver has since replaced with one elsewhere.
func (ds Drivers) SetOffline(ctx context.Context, driverID string) (Driver, error) {
	e := ds.e
	if e.replicas.of(driverID) == presenceElsewhere {
		return e.Store.Driver(ctx, driverID)
	}
	c, err := e.apply(ctx, func(now time.Time) (change, error) {
		d, err := e.Store.Driver(ctx, driverID)
		if err != nil {
			return change{}, err
		}
		switch d.State {
		case DriverOffline:
			return answer(d, Ride{}), nil
		case DriverOffered:
			return e.decline(ctx, driverID, d.OfferID, DriverOffline, now)
		}
		if err := d.moveTo(DriverOffline, now); err != nil {
			return change{}, err
		}
		return change{driver: d}, nil
	})
	if err != nil {
		return Driver{}, err
	}
	return c.driver, nil
}

// Ride returns the ride with id.
func (ds Drivers) Ride(ctx context.Context, id string) (Ride, error) { return ds.e.Store.Ride(ctx, id) }
