package dispatch

import (
	"context"
	"time"
)

// IdempotencyStore remembers, per scope (the rider), which request first used each
// Idempotency-Key and which ride it created, so that a retried request replays that
// ride instead of creating a second one.
//
// A key goes through two states: pending (reserved by the request that is creating
// the ride) and done (RideID set). Records expire after the TTL they were written with;
// an expired record is treated as absent by every method.
//
// Implementations: memstore.IdempotencyStore (in process) and
// redisstore.IdempotencyStore. Both must pass storetest.RunIdempotency.
type IdempotencyStore interface {
	// Reserve claims key in scope for a request with fingerprint, atomically: if no
	// live record exists it writes a pending one that lives for ttl and returns it
	// with reserved true. Otherwise it returns the live record with reserved false,
	// and the caller compares fingerprints, replays, or waits for the pending request.
	Reserve(ctx context.Context, scope, key, fingerprint string, ttl time.Duration) (rec IdempotencyRecord, reserved bool, err error)
	// Complete records rideID as the outcome of the pending reservation of key made
	// with fingerprint, and keeps the record for ttl from now. It returns
	// ErrIdempotencyNotReserved when no such pending reservation is live (it expired
	// or was released).
	Complete(ctx context.Context, scope, key, fingerprint, rideID string, ttl time.Duration) error
	// Release deletes the pending reservation of key made with fingerprint, so that a
	// request that failed may be retried. Completed records and other requests'
	// reservations are left alone; releasing nothing is not an error.
	Release(ctx context.Context, scope, key, fingerprint string) error
	// Lookup returns the live record of key in scope, or ErrIdempotencyKeyNotFound.
	Lookup(ctx context.Context, scope, key string) (IdempotencyRecord, error)
}

// IdempotencyRecord is what an IdempotencyStore keeps for one key.
type IdempotencyRecord struct {
	// Fingerprint identifies the request that first used the key: the rider API uses
	// the hex SHA-256 of method, path, rider and canonical body.
	Fingerprint string
	// RideID is the ride that request created; empty while it is still in flight.
	RideID    string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// Done reports whether the first request finished and RideID is its ride.
func (r IdempotencyRecord) Done() bool { return r.RideID != "" }

// Idempotency sentinels. Compare with errors.Is.
var (
	// ErrIdempotencyConflict: the key was first used with another request (HTTP 422).
	ErrIdempotencyConflict = sentinel(ECodeIdempotency, "idempotency key was already used with another request")
	// ErrIdempotencyInFlight: the first request with this key has not finished yet.
	ErrIdempotencyInFlight = sentinel(ECodeConflict, "a request with this idempotency key is still in progress; retry shortly")
	// ErrIdempotencyKeyNotFound: no live record for the key.
	ErrIdempotencyKeyNotFound = sentinel(ECodeNotFound, "idempotency key not found")
	// ErrIdempotencyNotReserved: Complete found no live pending reservation to complete.
	ErrIdempotencyNotReserved = sentinel(ECodeConflict, "idempotency key is not reserved by this request")
)
