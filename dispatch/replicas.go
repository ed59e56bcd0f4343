package dispatch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/understudy/understudy/dispatch/supply"
)

// replicas is what this replica knows of the region's others: where drivers' apps
// are, which rides they said they are matching, which drivers they took out of supply,
// and when the sweep is next due. Its mutex is a leaf.
type replicas struct {
	mu        sync.Mutex
	presence  map[string]presence  // where drivers' apps are, as far as this replica knows
	held      map[string]time.Time // rides other replicas said they queue, when last said
	recheck   map[string]struct{}  // drivers other replicas took out of supply
	nextSweep time.Time
}

// presence is where a driver's app is, as far as one replica knows. Only the replica
// that holds (or held) the app's socket says so, with PeerDriverConnected and
// PeerDriverAway; a driver never heard of is reachable.
type presence uint8

const (
	presenceUnknown   presence = iota // never heard of: reachable
	presenceHere                      // its socket is on this replica (Connect)
	presenceElsewhere                 // another replica said it connected there
	presenceAway                      // its socket dropped and no replica has it since
)

func (rs *replicas) set(driverID string, p presence) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.presence == nil {
		rs.presence = make(map[string]presence)
	}
	rs.presence[driverID] = p
}

func (rs *replicas) of(driverID string) presence {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.presence[driverID]
}

// isAway reports whether driverID's app cannot hear offers now, on any replica.
func (rs *replicas) isAway(driverID string) bool { return rs.of(driverID) == presenceAway }

// connectedElsewhere records another replica's word that driverID connected there,
// unless its socket is here.
func (rs *replicas) connectedElsewhere(driverID string) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.presence[driverID] != presenceHere {
		if rs.presence == nil {
			rs.presence = make(map[string]presence)
		}
		rs.presence[driverID] = presenceElsewhere
	}
}

// awayElsewhere records another replica's word that driverID's socket dropped there,
// and reports whether the driver's socket is here after all.
func (rs *replicas) awayElsewhere(driverID string) (here bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.presence[driverID] == presenceHere {
		return true
	}
	if rs.presence == nil {
		rs.presence = make(map[string]presence)
	}
	rs.presence[driverID] = presenceAway
	return false
}

// markRecheck asks the next Step to read driverID from the Store.
func (rs *replicas) markRecheck(driverID string) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.recheck == nil {
		rs.recheck = make(map[string]struct{})
	}
	rs.recheck[driverID] = struct{}{}
}

// takeRecheck returns the drivers to read again, and forgets them.
func (rs *replicas) takeRecheck() map[string]struct{} {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	ids := rs.recheck
	rs.recheck = nil
	return ids
}

// peer sends a replica event to the region's other replicas.
func (e *Engine) peer(ev PeerEvent) {
	if e.Peers != nil {
		e.Peers.Tell(ev)
	}
}

// supplyIn puts driverID at p in the supply index and tells the other replicas.
func (e *Engine) supplyIn(driverID string, p Point) {
	e.supply.Upsert(driverID, supply.Point(p))
	if e.Peers != nil {
		loc := p
		e.peer(PeerEvent{Type: PeerSupply, DriverID: driverID, Location: &loc})
	}
}

// supplyOut takes driverID out of the supply index and tells the other replicas, when
// it was in the index or always (for a change of the driver's state, which the other
// replicas must hear of even if this one's index had lost the driver already).
func (e *Engine) supplyOut(driverID string, always bool) {
	if e.supply.Remove(driverID) || always {
		e.peer(PeerEvent{Type: PeerSupply, DriverID: driverID})
	}
}

// Replicas is the engine as the region's bus uses it: what the other replicas
// publish comes in here. Get it from Engine.Replicas.
type Replicas struct{ e *Engine }

// Apply takes in a peer event that another replica of the region published, so that
// this replica's in-process indexes follow the region and not only its own traffic:
//   - PeerSupply moves the driver in (or out of) the supply index; a driver taken out
//     is read again from the Store in the next Step, so that events of two replicas
//     crossing on the way cannot leave an available driver out for good;
//   - PeerDriverConnected and PeerDriverAway say where the driver's app is: a driver
//     away is offered nothing until it connects again, to any replica;
//   - PeerQueue marks rides as handled, so the sweep does not adopt them.
//
// It never blocks on the Store and is safe to call from the bus's goroutine.
func (rp Replicas) Apply(ev PeerEvent) {
	e := rp.e
	switch ev.Type {
	case PeerSupply:
		if ev.Location == nil {
			// Out at once, so this replica offers it nothing; then read the Store in
			// the next Step, in case this "out" overtook a later "in" sent by another
			// replica (a claim on one, then a completed trip on another).
			e.supply.Remove(ev.DriverID)
			e.replicas.markRecheck(ev.DriverID)
			return
		}
		if e.supply.Move(ev.DriverID, supply.Point(*ev.Location)) || e.replicas.isAway(ev.DriverID) {
			return
		}
		e.supply.Upsert(ev.DriverID, supply.Point(*ev.Location))
		e.poke()
	case PeerDriverConnected:
		e.replicas.connectedElsewhere(ev.DriverID)
	case PeerDriverAway:
		if e.replicas.awayElsewhere(ev.DriverID) {
			// A socket it left elsewhere timed out after it connected here: say again
			// that it is here, and where it is in supply, after the others' "away".
			e.peer(PeerEvent{Type: PeerDriverConnected, DriverID: ev.DriverID})
			if at, ok := e.supply.Location(ev.DriverID); ok {
				p := Point(at)
				e.peer(PeerEvent{Type: PeerSupply, DriverID: ev.DriverID, Location: &p})
			}
			return
		}
		e.supply.Remove(ev.DriverID)
	case PeerQueue:
		e.replicas.hold(ev.Queue, e.Now())
	}
}

// Observe takes in a client event that another replica committed and published: an
// offer, or a ride that is searching, sets the timer this replica fires a grace period
// after the other replica's, in case that one died meanwhile. It never blocks.
func (rp Replicas) Observe(ev Event) {
	e := rp.e
	switch r := ev.Ride; {
	case ev.Type == EventOffer && ev.Offer != nil:
		e.timers.watch(timer{at: ev.Offer.ExpiresAt.Add(peerGrace), rideID: ev.Offer.RideID, offerID: ev.Offer.ID})
	case ev.Type == EventRideChanged && r.Status == RideSearching:
		e.timers.watch(timer{at: r.SearchDeadline.Add(peerGrace), rideID: r.ID})
	case ev.Type == EventRideChanged && r.Status.Final():
		e.matcher.forget(r.ID)
	}
}

// Deliver returns the Notifier for the events other replicas publish (the bus hands
// them to it): it passes them on to n, holding back a driver's event while this engine
// is publishing one of its own for that driver, so the two reach the driver in the
// order they were committed. It never blocks.
func (rp Replicas) Deliver(n Notifier) Notifier {
	return NotifierFunc(func(ev Event) {
		if ev.DriverID == "" {
			n.Notify(ev)
			return
		}
		rp.e.seq.after(ev.DriverID, func() { n.Notify(ev) })
	})
}

// recheckSupply reads the drivers other replicas took out of supply since the last
// Step and puts back those the Store says are available (and reachable).
func (e *Engine) recheckSupply(ctx context.Context) error {
	var errs []error
	for id := range e.replicas.takeRecheck() {
		d, err := e.Store.Driver(ctx, id)
		if errors.Is(err, ErrDriverNotFound) {
			continue
		}
		if err != nil {
			e.replicas.markRecheck(id) // next Step
			errs = append(errs, fmt.Errorf("recheck supply of driver %s: %w", id, err))
			continue
		}
		if d.State == DriverAvailable && d.Location != nil && !e.replicas.isAway(id) {
			if !e.supply.Move(id, supply.Point(*d.Location)) {
				e.supply.Upsert(id, supply.Point(*d.Location))
				e.poke()
			}
		}
	}
	return errors.Join(errs...)
}
