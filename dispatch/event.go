package dispatch

import "time"

// EventType says what an Event tells.
type EventType string

// Event types. Driver events carry DriverID; every event carries the ride as it is after
// the change.
const (
	EventOffer         EventType = "offer"          // Offer went to DriverID
	EventOfferRevoked  EventType = "offer_revoked"  // Offer was withdrawn from DriverID for Reason
	EventAssigned      EventType = "assigned"       // DriverID's accept won: Ride is theirs
	EventRideCancelled EventType = "ride_cancelled" // the rider cancelled DriverID's assigned ride
	EventDriverOffline EventType = "driver_offline" // DriverID was taken offline for Reason
	EventRideChanged   EventType = "ride_changed"   // Ride's status changed (riders follow these)
)

// Replica event types: what the other replicas of a region need to keep their own
// indexes in step with this one. The engine sends them to Engine.Peers (never to
// Notifier) and takes them in from the others through Engine.Replicas.
const (
	// EventSupply: DriverID entered or moved in the supply index (Location set) or
	// left it (Location nil).
	EventSupply EventType = "supply"
	// EventDriverConnected: DriverID's app connected to the sending replica.
	EventDriverConnected EventType = "driver_connected"
	// EventDriverAway: DriverID's app dropped from the sending replica: it is out of
	// supply, and offered nothing until it connects again, wherever.
	EventDriverAway EventType = "driver_away"
	// EventQueue: Queue lists the rides the sending replica is finding drivers for, so
	// that no other replica adopts them as orphans.
	EventQueue EventType = "queue"
)

// Event is a change that clients must hear about: gateways deliver driver events over
// the socket, the rider API streams ride changes.
type Event struct {
	Type     EventType
	DriverID string
	Ride     Ride
	Offer    *Offer
	Reason   string
	At       time.Time
	// Location is where an EventSupply's driver now is in supply; nil: out of it.
	Location *Point
	// Queue is an EventQueue's ride ids.
	Queue []string
}

// Notifier receives events after they are committed. Notify must not block: an
// implementation queues and delivers on its own goroutines.
type Notifier interface {
	Notify(Event)
}

// NotifierFunc adapts a function to Notifier.
type NotifierFunc func(Event)

// Notify calls f(ev).
func (f NotifierFunc) Notify(ev Event) { f(ev) }

// Notifiers fans every event out to each of its members in order.
type Notifiers []Notifier

// Notify passes ev to every member.
func (ns Notifiers) Notify(ev Event) {
	for _, n := range ns {
		if n != nil {
			n.Notify(ev)
		}
	}
}
