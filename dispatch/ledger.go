package dispatch

import (
	"context"
	"time"
)

// LedgerEntry is one payment owed to a driver for one ride, as the driver will be paid
// after the outage: a completed trip, or the fee for a ride its rider cancelled after
// the driver had arrived. A ride has at most one entry. Entries are never changed once
// written.
type LedgerEntry struct {
	Seq         uint64    `json:"seq"`  // position in the ledger, set by the Ledger
	Kind        EntryKind `json:"kind"` // EntryTrip or EntryCancellationFee
	RideID      string    `json:"ride_id"`
	DriverID    string    `json:"driver_id"`
	RiderID     string    `json:"rider_id"`
	Region      string    `json:"region,omitempty"`
	Pickup      Point     `json:"pickup"`
	Dropoff     Point     `json:"dropoff"`
	RequestedAt time.Time `json:"requested_at"`
	StartedAt   time.Time `json:"started_at,omitzero"` // trips only
	// CompletedAt is when the ride ended: the trip completed, or the rider cancelled.
	CompletedAt time.Time `json:"completed_at"`
	DistanceM   float64   `json:"distance_m"`
	Fare        Money     `json:"fare"` // the trip's fare, or the cancellation fee
	RecordedAt  time.Time `json:"recorded_at"`
}

// EntryKind says what a ledger entry pays for.
type EntryKind string

// Ledger entry kinds.
const (
	EntryTrip            EntryKind = "trip"             // a completed trip; entries without a kind are trips
	EntryCancellationFee EntryKind = "cancellation_fee" // the rider cancelled after the driver arrived
)

// ErrNoLedgerEntry: the ride has no ledger entry (yet).
var ErrNoLedgerEntry = sentinel(ECodeNotFound, "no ledger entry")

// Ledger is the durable record of what drivers are owed.
type Ledger interface {
	// Record writes e unless the ride already has an entry, and returns the stored
	// entry once it is durable. Recording a ride twice never makes two entries.
	Record(ctx context.Context, e LedgerEntry) (LedgerEntry, error)
	// Entry returns the entry of driverID's ride rideID, or ErrNoLedgerEntry.
	Entry(ctx context.Context, driverID, rideID string) (LedgerEntry, error)
	// Entries calls fn for every entry completed at or after since, in ledger order;
	// driverID, if not empty, keeps only that driver's entries.
	Entries(ctx context.Context, since time.Time, driverID string, fn func(LedgerEntry) error) error
}

// tripEntry is the entry of ride r completing at r.EndedAt.
func tripEntry(r Ride, region string, now time.Time) LedgerEntry {
	return LedgerEntry{
		Kind:   EntryTrip,
		RideID: r.ID, DriverID: r.DriverID, RiderID: r.RiderID, Region: region,
		Pickup: r.Pickup, Dropoff: r.Dropoff,
		RequestedAt: r.CreatedAt, StartedAt: r.StartedAt, CompletedAt: r.EndedAt,
		DistanceM: r.DistanceM, Fare: r.Fare, RecordedAt: now,
	}
}

// feeEntry is the cancellation fee of ride r, cancelled at r.CancelFeeAt.
func feeEntry(r Ride, fee Money, region string, now time.Time) LedgerEntry {
	return LedgerEntry{
		Kind:   EntryCancellationFee,
		RideID: r.ID, DriverID: r.DriverID, RiderID: r.RiderID, Region: region,
		Pickup: r.Pickup, Dropoff: r.Dropoff,
		RequestedAt: r.CreatedAt, CompletedAt: r.CancelFeeAt,
		Fare: fee, RecordedAt: now,
	}
}

// Earnings totals what a driver is owed over a period.
type Earnings struct {
	DriverID         string  `json:"driver_id"`
	Since            string  `json:"since"`
	Trips            int     `json:"trips"`             // completed trips
	CancellationFees int     `json:"cancellation_fees"` // rides cancelled after the driver arrived
	DistanceM        float64 `json:"distance_m"`        // of the trips
	Fares            []Money `json:"fares"`             // one total per currency: trips' fares and fees
}

// Add counts e into the totals.
func (t *Earnings) Add(e LedgerEntry) {
	if e.Kind == EntryCancellationFee {
		t.CancellationFees++
	} else {
		t.Trips++
	}
	t.DistanceM += e.DistanceM
	for i := range t.Fares {
		if t.Fares[i].Currency == e.Fare.Currency {
			t.Fares[i].Amount += e.Fare.Amount
			return
		}
	}
	t.Fares = append(t.Fares, e.Fare)
}
