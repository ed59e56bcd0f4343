package memstore

import (
	"context"
	"sync"
	"time"

	"github.com/understudy/understudy/dispatch"
)

var _ dispatch.IdempotencyStore = (*IdempotencyStore)(nil)

// IdempotencyStore is the in-process dispatch.IdempotencyStore: records in a map
// behind one mutex. Expired records are ignored at once and freed by Sweep, which the
// server runs periodically.
type IdempotencyStore struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu      sync.Mutex
	records map[idemKey]dispatch.IdempotencyRecord
}

type idemKey struct{ scope, key string }

// NewIdempotencyStore returns an empty store on the real clock.
func NewIdempotencyStore() *IdempotencyStore { return &IdempotencyStore{} }

func (s *IdempotencyStore) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// liveLocked returns the record of k if it has not expired at now.
func (s *IdempotencyStore) liveLocked(k idemKey, now time.Time) (dispatch.IdempotencyRecord, bool) {
	rec, ok := s.records[k]
	if !ok || !now.Before(rec.ExpiresAt) {
		return dispatch.IdempotencyRecord{}, false
	}
	return rec, true
}

// Reserve implements dispatch.IdempotencyStore.
func (s *IdempotencyStore) Reserve(_ context.Context, scope, key, fingerprint string, ttl time.Duration) (dispatch.IdempotencyRecord, bool, error) {
	now := s.now()
	k := idemKey{scope, key}
	s.mu.Lock()
	defer s.mu.Unlock()
	if rec, ok := s.liveLocked(k, now); ok {
		return rec, false, nil
	}
	if s.records == nil {
		s.records = make(map[idemKey]dispatch.IdempotencyRecord)
	}
	rec := dispatch.IdempotencyRecord{Fingerprint: fingerprint, CreatedAt: now, ExpiresAt: now.Add(ttl)}
	s.records[k] = rec
	return rec, true, nil
}

// Complete implements dispatch.IdempotencyStore.
func (s *IdempotencyStore) Complete(_ context.Context, scope, key, fingerprint, rideID string, ttl time.Duration) error {
	now := s.now()
	k := idemKey{scope, key}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.liveLocked(k, now)
	if !ok || rec.Done() || rec.Fingerprint != fingerprint {
		return dispatch.ErrIdempotencyNotReserved
	}
	rec.RideID = rideID
	rec.ExpiresAt = now.Add(ttl)
	s.records[k] = rec
	return nil
}

// Release implements dispatch.IdempotencyStore.
func (s *IdempotencyStore) Release(_ context.Context, scope, key, fingerprint string) error {
	k := idemKey{scope, key}
	s.mu.Lock()
	defer s.mu.Unlock()
	if rec, ok := s.records[k]; ok && !rec.Done() && rec.Fingerprint == fingerprint {
		delete(s.records, k)
	}
	return nil
}

// Lookup implements dispatch.IdempotencyStore.
func (s *IdempotencyStore) Lookup(_ context.Context, scope, key string) (dispatch.IdempotencyRecord, error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if rec, ok := s.liveLocked(idemKey{scope, key}, now); ok {
		return rec, nil
	}
	return dispatch.IdempotencyRecord{}, dispatch.ErrIdempotencyKeyNotFound
}

// Sweep frees every expired record and returns how many it freed.
func (s *IdempotencyStore) Sweep() int {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, rec := range s.records {
		if !now.Before(rec.ExpiresAt) {
			delete(s.records, k)
			n++
		}
	}
	return n
}

// Len is the number of records held, expired or not (for tests and metrics).
func (s *IdempotencyStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.records)
}
