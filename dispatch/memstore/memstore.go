// Package memstore is the in-process dispatch.Store: the embedded default, and the
// reference the Redis store is held to by the shared contract suite.
package memstore

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/understudy/understudy/dispatch"
)

var _ dispatch.Store = (*Store)(nil)

// Store keeps drivers and rides in maps behind one mutex. Records are copied in and
// out, so callers never share memory with the store.
type Store struct {
	mu      sync.RWMutex
	drivers map[string]dispatch.Driver
	rides   map[string]dispatch.Ride
	fence   uint64
	closed  bool
}

// New returns an empty store.
func New() *Store {
	return &Store{drivers: make(map[string]dispatch.Driver), rides: make(map[string]dispatch.Ride)}
}

// Driver implements dispatch.Store.
func (s *Store) Driver(_ context.Context, id string) (dispatch.Driver, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	d, ok := s.drivers[id]
	if !ok {
		return dispatch.Driver{}, dispatch.ErrDriverNotFound
	}
	return copyDriver(d), nil
}

// Ride implements dispatch.Store.
func (s *Store) Ride(_ context.Context, id string) (dispatch.Ride, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.rides[id]
	if !ok {
		return dispatch.Ride{}, dispatch.ErrRideNotFound
	}
	return copyRide(r), nil
}

// Commit implements dispatch.Store.
func (s *Store) Commit(_ context.Context, tx dispatch.Tx) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return dispatch.ErrClosed
	}
	if tx.Epoch < s.fence {
		return dispatch.ErrStaleEpoch
	}
	for _, d := range tx.Drivers {
		if s.drivers[d.ID].Version != d.Version {
			return dispatch.ErrVersionConflict
		}
	}
	for _, r := range tx.Rides {
		if s.rides[r.ID].Version != r.Version {
			return dispatch.ErrVersionConflict
		}
	}
	for _, r := range tx.Restore {
		if _, ok := s.rides[r.ID]; ok {
			return dispatch.ErrVersionConflict
		}
	}
	for _, p := range tx.Replace {
		if old, ok := s.rides[p.Ride.ID]; !ok || old.Version != p.Over {
			return dispatch.ErrVersionConflict
		}
	}
	for _, d := range tx.Drivers {
		if old, ok := s.drivers[d.ID]; ok && old.LocatedAt.After(d.LocatedAt) {
			// SetLocation ran after this driver was read: keep the newer position.
			d.Location, d.LocatedAt = old.Location, old.LocatedAt
		}
		d = copyDriver(d)
		d.Version++
		s.drivers[d.ID] = d
	}
	for _, r := range tx.Rides {
		r = copyRide(r)
		r.Version++
		s.rides[r.ID] = r
	}
	for _, r := range tx.Restore {
		r = copyRide(r)
		r.Version = max(1, r.Version)
		s.rides[r.ID] = r
	}
	for _, p := range tx.Replace {
		r := copyRide(p.Ride)
		r.Version = max(1, r.Version)
		s.rides[r.ID] = r
	}
	return nil
}

// SetLocation implements dispatch.Store.
func (s *Store) SetLocation(_ context.Context, id string, p dispatch.Point, at time.Time) (dispatch.DriverState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.drivers[id]
	if !ok {
		return "", dispatch.ErrDriverNotFound
	}
	d.Location, d.LocatedAt = &p, at
	s.drivers[id] = d
	return d.State, nil
}

// Fence implements dispatch.Store.
func (s *Store) Fence(_ context.Context, epoch uint64) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fence = max(s.fence, epoch)
	return s.fence, nil
}

// Drivers implements dispatch.Store. fn runs on a snapshot, without the lock held.
func (s *Store) Drivers(_ context.Context, fn func(dispatch.Driver) error) error {
	s.mu.RLock()
	all := make([]dispatch.Driver, 0, len(s.drivers))
	for _, d := range s.drivers {
		all = append(all, copyDriver(d))
	}
	s.mu.RUnlock()
	slices.SortFunc(all, func(a, b dispatch.Driver) int { return strings.Compare(a.ID, b.ID) })
	for _, d := range all {
		if err := fn(d); err != nil {
			return err
		}
	}
	return nil
}

// ActiveRides implements dispatch.Store. fn runs on a snapshot, without the lock held.
func (s *Store) ActiveRides(_ context.Context, fn func(dispatch.Ride) error) error {
	s.mu.RLock()
	var active []dispatch.Ride
	for _, r := range s.rides {
		if !r.Status.Final() {
			active = append(active, copyRide(r))
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(active, func(a, b dispatch.Ride) int { return strings.Compare(a.ID, b.ID) })
	for _, r := range active {
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

// Close implements dispatch.Store; later commits fail with ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

func copyDriver(d dispatch.Driver) dispatch.Driver {
	if d.Location != nil {
		p := *d.Location
		d.Location = &p
	}
	return d
}

func copyRide(r dispatch.Ride) dispatch.Ride {
	if r.Offer != nil {
		o := *r.Offer
		r.Offer = &o
	}
	r.Declined = slices.Clone(r.Declined)
	return r
}
