package dispatch

import "time"

// Metrics receives the engine's measurements. The Prometheus adapter lives in
// dispatch/prommetrics; a nil Metrics on the Engine records nothing.
type Metrics interface {
	// MatchLatency: from a ride's request to its first offer.
	MatchLatency(d time.Duration)
	// BatchSolved: one tick's batch of rides, how many got an offer, and the solve time.
	BatchSolved(rides, offered int, d time.Duration)
	// OfferOutcome: accepted, declined, expired, revoked or lost (claim raced).
	OfferOutcome(outcome string)
	// RideEnded: a ride reached a final status.
	RideEnded(status RideStatus)
	// Conflict: a commit lost a race with a concurrent change of the same records
	// (ErrVersionConflict) and is retried, or given up after too many tries.
	Conflict()
	// FencedWrite: the ride log refused a write of this region because another region
	// had taken the ride's area (ErrFenced).
	FencedWrite()
	// InFlight: the rides not yet final in the areas this region serves, counted at
	// each sweep by area ("" for rides outside any deployment) and status. Keys
	// missing from one count have none.
	InFlight(counts map[AreaStatus]int)
}

// AreaStatus keys InFlight's counts.
type AreaStatus struct {
	Area   string
	Status RideStatus
}

// Offer outcomes passed to Metrics.OfferOutcome.
const (
	OutcomeAccepted = "accepted"
	OutcomeDeclined = "declined"
	OutcomeExpired  = "expired"
	OutcomeRevoked  = "revoked"
)

type nopMetrics struct{}

func (nopMetrics) MatchLatency(time.Duration)          {}
func (nopMetrics) BatchSolved(int, int, time.Duration) {}
func (nopMetrics) OfferOutcome(string)                 {}
func (nopMetrics) RideEnded(RideStatus)                {}
func (nopMetrics) Conflict()                           {}
func (nopMetrics) FencedWrite()                        {}
func (nopMetrics) InFlight(map[AreaStatus]int)         {}
