package dispatch

import "time"

// DriverState is where a driver stands in the dispatch cycle.
type DriverState string

// Driver states.
const (
	DriverOffline   DriverState = "offline"   // connected or not, takes no offers
	DriverAvailable DriverState = "available" // in the supply index, may be offered a ride
	DriverOffered   DriverState = "offered"   // holds exactly one offer, waiting for the answer
	DriverEnRoute   DriverState = "en_route"  // accepted a ride, driving to the pickup
	DriverOnTrip    DriverState = "on_trip"   // rider on board
)

// driverTransitions lists every legal change of driver state.
var driverTransitions = map[DriverState][]DriverState{
	DriverOffline:   {DriverAvailable},
	DriverAvailable: {DriverOffline, DriverOffered},
	DriverOffered:   {DriverAvailable, DriverEnRoute, DriverOffline},
	DriverEnRoute:   {DriverOnTrip, DriverAvailable},
	DriverOnTrip:    {DriverAvailable},
}

// CanBecome reports whether a driver in state s may move to state t.
func (s DriverState) CanBecome(t DriverState) bool {
	for _, x := range driverTransitions[s] {
		if x == t {
			return true
		}
	}
	return false
}

// Driver is the hot state of one driver.
type Driver struct {
	ID        string      `json:"id"`
	State     DriverState `json:"state"`
	Location  *Point      `json:"location,omitempty"`
	LocatedAt time.Time   `json:"located_at,omitzero"`
	OfferID   string      `json:"offer_id,omitempty"` // set only while State == offered
	RideID    string      `json:"ride_id,omitempty"`  // the offered or assigned ride
	// MissedOffers counts offers in a row this driver let expire; at
	// Config.MaxMissedOffers the driver is taken offline.
	MissedOffers int       `json:"missed_offers,omitempty"`
	UpdatedAt    time.Time `json:"updated_at"`
	// Version is the Store's optimistic-concurrency version: 0 for a record that does
	// not exist yet, incremented by every commit.
	Version uint64 `json:"version"`
}

// moveTo changes d's state, refusing illegal changes with ErrIllegalTransition.
func (d *Driver) moveTo(t DriverState, now time.Time) error {
	if !d.State.CanBecome(t) {
		return wrapf(ErrIllegalTransition, "driver %s cannot go from %s to %s", d.ID, d.State, t)
	}
	d.State = t
	d.UpdatedAt = now
	if t != DriverOffered {
		d.OfferID = ""
	}
	if t == DriverAvailable || t == DriverOffline {
		d.RideID = ""
	}
	return nil
}
