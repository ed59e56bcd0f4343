package dispatch

import (
	"context"
	"time"
)

// LedgerEntry is one completed trip, as the driver will be paid for it after the
// outage. Entries are never changed once written.
type LedgerEntry struct {
	Seq         uint64    `json:"seq"` // position in the ledger, set by the Ledger
	RideID      string    `json:"ride_id"`
	DriverID    string    `json:"driver_id"`
	RiderID     string    `json:"rider_id"`
	Region      string    `json:"region,omitempty"`
	Pickup      Point     `json:"pickup"`
	Dropoff     Point     `json:"dropoff"`
	RequestedAt time.Time `json:"requested_at"`
	StartedAt   time.Time `json:"started_at"`
	CompletedAt time.Time `json:"completed_at"`
	DistanceM   float64   `json:"distance_m"`
	Fare        Money     `json:"fare"`
	RecordedAt  time.Time `json:"recorded_at"`
}

// ErrNoLedgerEntry: the ride has no ledger entry (yet).
var ErrNoLedgerEntry = sentinel(ECodeNotFound, "no ledger entry")

// Ledger is the durable record of completed trips.
type Ledger interface {
	// Record writes e unless the ride already has an entry, and returns the stored
	// entry once it is durable. Recording a trip twice never makes two entries.
	Record(ctx context.Context, e LedgerEntry) (LedgerEntry, error)
	// Entry returns the entry of driverID's ride rideID, or ErrNoLedgerEntry.
	Entry(ctx context.Context, driverID, rideID string) (LedgerEntry, error)
	// Entries calls fn for every entry completed at or after since, in ledger order;
	// driverID, if not empty, keeps only that driver's trips.
	Entries(ctx context.Context, since time.Time, driverID string, fn func(LedgerEntry) error) error
}

// tripEntry is the entry of ride r completing at r.EndedAt.
func tripEntry(r Ride, region string, now time.Time) LedgerEntry {
	return LedgerEntry{
		RideID: r.ID, DriverID: r.DriverID, RiderID: r.RiderID, Region: region,
		Pickup: r.Pickup, Dropoff: r.Dropoff,
		RequestedAt: r.CreatedAt, StartedAt: r.StartedAt, CompletedAt: r.EndedAt,
		DistanceM: r.DistanceM, Fare: r.Fare, RecordedAt: now,
	}
}

// Earnings totals a driver's trips over a period.
type Earnings struct {
	DriverID  string  `json:"driver_id"`
	Since     string  `json:"since"`
	Trips     int     `json:"trips"`
	DistanceM float64 `json:"distance_m"`
	Fares     []Money `json:"fares"` // one total per currency
}

// Add counts e into the totals.
func (t *Earnings) Add(e LedgerEntry) {
	t.Trips++
	t.DistanceM += e.DistanceM
	for i := range t.Fares {
		if t.Fares[i].Currency == e.Fare.Currency {
			t.Fares[i].Amount += e.Fare.Amount
			return
		}
	}
	t.Fares = append(t.Fares, e.Fare)
}
