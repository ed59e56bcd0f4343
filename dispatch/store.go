package dispatch

import (
	"context"
	"time"
)

// Store holds the hot state of one region: drivers and rides. Every change is a Tx
// committed atomically with optimistic concurrency, so several engine replicas (and
// their gateways) can share one Store without assigning a driver twice.
//
// Implementations: memstore (in process, the default) and, for production, Redis.
// Both must pass storetest.Run.
type Store interface {
	// Driver returns the driver with id, or ErrDriverNotFound.
	Driver(ctx context.Context, id string) (Driver, error)
	// Ride returns the ride with id, or ErrRideNotFound.
	Ride(ctx context.Context, id string) (Ride, error)
	// Commit writes every record of tx, or none. Each record's Version must equal the
	// stored version (0: the record must not exist yet), else ErrVersionConflict; tx.Epoch
	// must be at least the store's fence, else ErrStaleEpoch. Stored versions become
	// Version+1, except those of tx.Restore, which stay as they are.
	Commit(ctx context.Context, tx Tx) error
	// SetLocation records a driver's position without changing its version, so a
	// location stream never makes a state change retry, and returns the driver's state.
	// ErrDriverNotFound if unknown.
	SetLocation(ctx context.Context, id string, p Point, at time.Time) (DriverState, error)
	// Fence raises the store's fencing epoch to epoch (never lowers it) and returns the
	// fence now in force. Writers with a lower epoch can no longer commit.
	Fence(ctx context.Context, epoch uint64) (uint64, error)
	// Drivers calls fn for every driver; ActiveRides for every ride not yet final.
	// They rebuild the engine's in-process indexes after a restart.
	Drivers(ctx context.Context, fn func(Driver) error) error
	ActiveRides(ctx context.Context, fn func(Ride) error) error
	// Close releases the store's resources.
	Close() error
}

// Generation is what a Store whose contents can be lost while the engine runs (a
// Redis flushed, or restarted without its data) offers, so that the engine notices
// and refills it from the ride log: an id that changes whenever the contents were
// lost.
type Generation interface {
	Generation(ctx context.Context) (string, error)
}

// Tx is one atomic change of a Store: the new contents of some drivers and rides, each
// carrying the version it was read at.
type Tx struct {
	Epoch   uint64
	Drivers []Driver
	Rides   []Ride
	// Restore puts back rides the Store lost, as the ride log kept them: each must not
	// exist (else ErrVersionConflict) and is stored at its own Version (at least 1),
	// so that a ride's versions only grow across a restore. Engine.Open and adopt use
	// it.
	Restore []Ride
	// Replace puts back rides as the ride log kept them over a copy the Store holds
	// that differs from the log: a region taking an area back finds its old copies
	// behind the log, or ahead of it by a write the log refused (ErrFenced). Each is
	// stored at its Ride's Version, and the Store must hold it at Over (else
	// ErrVersionConflict). Only adopt uses it.
	Replace []Replacement
}

// Replacement is a ride of Tx.Replace: the log's Ride, over the Store's copy at
// version Over.
type Replacement struct {
	Ride Ride
	Over uint64
}

// RideLog is the durable log of ride changes: the record that outlives the hot state.
type RideLog interface {
	// Append durably records rides as they now are.
	Append(ctx context.Context, rides []Ride) error
	// Latest calls fn with the last logged state of every ride of this region (rides
	// without an area).
	Latest(ctx context.Context, fn func(Ride) error) error
	// LatestIn calls fn with the last logged state of every ride of area, whichever
	// region logged it.
	LatestIn(ctx context.Context, area string, fn func(Ride) error) error
}
