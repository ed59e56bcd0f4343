package dispatch

import (
	"context"
	"errors"
	"fmt"

	"github.com/understudy/understudy/dispatch/supply"
)

// presence is where a driver's app is, as far as one replica knows. Only the replica
// that holds (or held) the app's socket says so, with EventDriverConnected and
// EventDriverAway; a driver never heard of is reachable.
type presence uint8

const (
	presenceUnknown   presence = iota // never heard of: reachable
	presenceHere                      // its socket is on this replica (Connect)
	presenceElsewhere                 // another replica said it connected there
	presenceAway                      // its socket dropped and no replica has it since
)

func (e *Engine) presenceOf(driverID string) presence {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.presence[driverID]
}

// isAway reports whether driverID's app cannot hear offers now, on any replica.
func (e *Engine) isAway(driverID string) bool { return e.presenceOf(driverID) == presenceAway }

// peer sends a replica event to the region's other replicas.
func (e *Engine) peer(ev Event) {
	if e.Peers != nil {
		e.Peers.Notify(ev)
	}
}

// supplyIn puts driverID at p in the supply index and tells the other replicas.
func (e *Engine) supplyIn(driverID string, p Point) {
	e.supply.Upsert(driverID, supply.Point(p))
	if e.Peers != nil {
		loc := p
		e.peer(Event{Type: EventSupply, DriverID: driverID, Location: &loc})
	}
}

// supplyOut takes driverID out of the supply index and tells the other replicas, when
// it was in the index or always (for a change of the driver's state, which the other
// replicas must hear of even if this one's index had lost the driver already).
func (e *Engine) supplyOut(driverID string, always bool) {
	if e.supply.Remove(driverID) || always {
		e.peer(Event{Type: EventSupply, DriverID: driverID})
	}
}

// ApplyRemote takes in an event that another replica of the region published, so that
// this replica's in-process indexes follow the region and not only its own traffic:
//   - EventSupply moves the driver in (or out of) the supply index; a driver taken
//     out is read again from the Store in the next Step, so that events of two
//     replicas crossing on the way cannot leave an available driver out for good;
//   - EventDriverConnected and EventDriverAway say where the driver's app is: a driver
//     away is offered nothing until it connects again, to any replica;
//   - EventQueue marks rides as handled, so the sweep does not adopt them;
//   - EventOffer and EventRideChanged (searching) set the timers this replica fires a
//     grace period after the other replica's, in case that one died meanwhile.
//
// Other events change nothing here. It never blocks on the Store and is safe to call
// from the bus's goroutine.
func (e *Engine) ApplyRemote(ev Event) {
	switch ev.Type {
	case EventSupply:
		if ev.Location == nil {
			// Out at once, so this replica offers it nothing; then read the Store in
			// the next Step, in case this "out" overtook a later "in" sent by another
			// replica (a claim on one, then a completed trip on another).
			e.supply.Remove(ev.DriverID)
			e.mu.Lock()
			e.recheck[ev.DriverID] = struct{}{}
			e.mu.Unlock()
			return
		}
		if e.supply.Move(ev.DriverID, supply.Point(*ev.Location)) || e.isAway(ev.DriverID) {
			return
		}
		e.supply.Upsert(ev.DriverID, supply.Point(*ev.Location))
		e.poke()
	case EventDriverConnected:
		e.mu.Lock()
		if e.presence[ev.DriverID] != presenceHere {
			e.presence[ev.DriverID] = presenceElsewhere
		}
		e.mu.Unlock()
	case EventDriverAway:
		e.mu.Lock()
		here := e.presence[ev.DriverID] == presenceHere
		if !here {
			e.presence[ev.DriverID] = presenceAway
		}
		e.mu.Unlock()
		if here {
			// A socket it left elsewhere timed out after it connected here: say again
			// that it is here, and where it is in supply, after the others' "away".
			e.peer(Event{Type: EventDriverConnected, DriverID: ev.DriverID})
			if at, ok := e.supply.Location(ev.DriverID); ok {
				p := Point(at)
				e.peer(Event{Type: EventSupply, DriverID: ev.DriverID, Location: &p})
			}
			return
		}
		e.supply.Remove(ev.DriverID)
	case EventQueue:
		now := e.Now()
		e.mu.Lock()
		for _, id := range ev.Queue {
			e.held[id] = now
		}
		e.mu.Unlock()
	case EventOffer:
		if o := ev.Offer; o != nil {
			e.mu.Lock()
			e.watchLocked(timer{at: o.ExpiresAt.Add(peerGrace), rideID: o.RideID, offerID: o.ID})
			e.mu.Unlock()
		}
	case EventRideChanged:
		r := ev.Ride
		e.mu.Lock()
		switch {
		case r.Status == RideSearching:
			e.watchLocked(timer{at: r.SearchDeadline.Add(peerGrace), rideID: r.ID})
		case r.Status.Final():
			delete(e.firstOff, r.ID)
		}
		e.mu.Unlock()
	}
}

// recheckSupply reads the drivers other replicas took out of supply since the last
// Step and puts back those the Store says are available (and reachable).
func (e *Engine) recheckSupply(ctx context.Context) error {
	e.mu.Lock()
	ids := e.recheck
	if len(ids) > 0 {
		e.recheck = make(map[string]struct{})
	}
	e.mu.Unlock()
	var errs []error
	for id := range ids {
		d, err := e.Store.Driver(ctx, id)
		if errors.Is(err, ErrDriverNotFound) {
			continue
		}
		if err != nil {
			e.mu.Lock()
			e.recheck[id] = struct{}{} // next Step
			e.mu.Unlock()
			errs = append(errs, fmt.Errorf("recheck supply of driver %s: %w", id, err))
			continue
		}
		if d.State == DriverAvailable && d.Location != nil && !e.isAway(id) {
			if !e.supply.Move(id, supply.Point(*d.Location)) {
				e.supply.Upsert(id, supply.Point(*d.Location))
				e.poke()
			}
		}
	}
	return errors.Join(errs...)
}
