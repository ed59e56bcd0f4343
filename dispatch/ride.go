package dispatch

import "time"

// RideStatus is the rider-visible status of a ride (the contract's list).
type RideStatus string

// Ride statuses.
const (
	RideSearching  RideStatus = "searching"   // looking for a driver; offers go out
	RideMatched    RideStatus = "matched"     // a driver accepted and is on the way
	RideArrived    RideStatus = "arrived"     // the driver is at the pickup
	RideInProgress RideStatus = "in_progress" // rider on board
	RideCompleted  RideStatus = "completed"   // trip done; final
	RideCancelled  RideStatus = "cancelled"   // the rider cancelled; final
	RideNoDriver   RideStatus = "no_driver"   // nobody accepted in time; final
)

// rideTransitions lists every legal change of ride status.
var rideTransitions = map[RideStatus][]RideStatus{
	RideSearching:  {RideMatched, RideCancelled, RideNoDriver},
	RideMatched:    {RideArrived, RideCancelled},
	RideArrived:    {RideInProgress, RideCancelled},
	RideInProgress: {RideCompleted}, // a trip in progress is ended by its driver
}

// CanBecome reports whether a ride with status s may move to status t.
func (s RideStatus) CanBecome(t RideStatus) bool {
	for _, x := range rideTransitions[s] {
		if x == t {
			return true
		}
	}
	return false
}

// Final reports whether s is an end state.
func (s RideStatus) Final() bool { return len(rideTransitions[s]) == 0 }

// Money is an amount in the currency's minor unit (KRW has none).
type Money struct {
	Amount   int64  `json:"amount"`
	Currency string `json:"currency"`
}

// Ride is one ride request and its trip.
type Ride struct {
	ID       string     `json:"id"`
	RiderID  string     `json:"rider_id"`
	Status   RideStatus `json:"status"`
	Pickup   Point      `json:"pickup"`
	Dropoff  Point      `json:"dropoff"`
	DriverID string     `json:"driver_id,omitempty"`
	// Area is the deployment's area of the pickup, which the ride keeps for life: the
	// region holding that area's lease is the one that may change the ride. Empty
	// without a deployment file.
	Area string `json:"area,omitempty"`
	Fare Money  `json:"fare"`
	// DistanceM is the estimated trip distance (pickup to dropoff).
	DistanceM float64 `json:"distance_m"`
	// Offer is the outstanding offer while searching; a ride has at most one.
	Offer *Offer `json:"offer,omitempty"`
	// Declined lists drivers who declined or let an offer for this ride expire; the
	// cascade never offers it to them again.
	Declined []string `json:"declined,omitempty"`
	// SearchDeadline is when a ride still searching ends as no_driver.
	SearchDeadline time.Time `json:"search_deadline"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
	MatchedAt      time.Time `json:"matched_at,omitzero"`
	StartedAt      time.Time `json:"started_at,omitzero"`
	EndedAt        time.Time `json:"ended_at,omitzero"`
	// CancelFeeAt is when the rider cancelled the ride after its driver arrived, which
	// owes the driver the cancellation fee. It is committed on its own, before the fee
	// is written and the ride cancelled, so that a cancel interrupted in between (by a
	// crash, or a ledger that did not answer) is finished later rather than lost, and
	// so that the driver can no longer start the trip.
	CancelFeeAt time.Time `json:"cancel_fee_at,omitzero"`
	// Version is the Store's optimistic-concurrency version (see Driver.Version).
	Version uint64 `json:"version"`
}

// moveTo changes r's status, refusing illegal changes with ErrIllegalTransition.
func (r *Ride) moveTo(t RideStatus, now time.Time) error {
	if !r.Status.CanBecome(t) {
		return wrapf(ErrIllegalTransition, "ride %s cannot go from %s to %s", r.ID, r.Status, t)
	}
	r.Status = t
	r.UpdatedAt = now
	r.Offer = nil
	switch t {
	case RideMatched:
		r.MatchedAt = now
	case RideInProgress:
		r.StartedAt = now
	case RideCompleted, RideCancelled, RideNoDriver:
		r.EndedAt = now
	}
	return nil
}

func (r *Ride) hasDeclined(driverID string) bool {
	for _, d := range r.Declined {
		if d == driverID {
			return true
		}
	}
	return false
}

// Offer is a ride offered to one driver until ExpiresAt.
type Offer struct {
	ID        string    `json:"offer_id"`
	RideID    string    `json:"ride_id"`
	DriverID  string    `json:"driver_id"`
	Pickup    Point     `json:"pickup"`
	Dropoff   Point     `json:"dropoff"`
	Fare      Money     `json:"fare"`
	PickupM   float64   `json:"pickup_distance_m"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Revocation reasons sent with offer_revoked.
const (
	ReasonExpired   = "expired"   // the driver did not answer in time
	ReasonTaken     = "taken"     // the ride went to someone else or ended
	ReasonCancelled = "cancelled" // the rider cancelled
	// ReasonMissedOffers: a driver was taken offline after Config.MaxMissedOffers
	// offers in a row expired unanswered.
	ReasonMissedOffers = "missed_offers"
)
