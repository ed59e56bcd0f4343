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
	// EventAreaMoved: Ride's area is served by another region now (To, nil while
	// nobody serves it): its driver and rider go there.
	EventAreaMoved EventType = "area_moved"
)

// Event is a change that clients must hear about: gateways deliver driver events over
// the socket, the rider API streams ride changes.
type Event struct {
	Type     EventType
	DriverID string
	Ride     Ride
	Offer    *Offer
	Reason   string
	To       *Redirect // EventAreaMoved: the region that serves the ride's area now
	At       time.Time
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

// PeerEventType says what a PeerEvent tells.
type PeerEventType string

// Peer event types: what the other replicas of a region need to keep their own indexes
// in step with this one. No client ever sees them.
const (
	// PeerSupply: DriverID entered or moved in the supply index (Location set) or left
	// it (Location nil).
	PeerSupply PeerEventType = "supply"
	// PeerDriverConnected: DriverID's app connected to the sending replica.
	PeerDriverConnected PeerEventType = "driver_connected"
	// PeerDriverAway: DriverID's app dropped from the sending replica: it is out of
	// supply, and offered nothing until it connects again, wherever.
	PeerDriverAway PeerEventType = "driver_away"
	// PeerQueue: Queue lists the rides the sending replica is finding drivers for, so
	// that no other replica adopts them as orphans.
	PeerQueue PeerEventType = "queue"
)

// PeerEvent is what one replica tells the region's others about its own indexes.
type PeerEvent struct {
	Type     PeerEventType
	DriverID string
	// Location is where a PeerSupply's driver now is in supply; nil: out of it.
	Location *Point
	// Queue is a PeerQueue's ride ids.
	Queue []string
	At    time.Time
}

// Peers carries what one replica tells the region's other replicas: its peer events,
// and its client events for the clients connected there. The bus (dispatch/natsbus)
// implements it; a lone engine has none. Neither method may block.
type Peers interface {
	Tell(PeerEvent)
	Forward(Event)
}
