package memstore_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/memstore"
	"github.com/understudy/understudy/dispatch/storetest"
)

func TestIdempotencyContract(t *testing.T) {
	storetest.RunIdempotency(t, func(testing.TB) dispatch.IdempotencyStore { return memstore.NewIdempotencyStore() })
}

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestIdempotencyExpiresOnTheInjectedClockAndSweeps(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{now: time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)}
	s := &memstore.IdempotencyStore{Now: clock.Now}
	if _, ok, err := s.Reserve(ctx, "u-1", "k-1", "fp", time.Minute); err != nil || !ok {
		t.Fatalf("Reserve = %v, %v", ok, err)
	}
	if err := s.Complete(ctx, "u-1", "k-1", "fp", "r-1", 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.Reserve(ctx, "u-1", "k-2", "fp", time.Minute); err != nil || !ok {
		t.Fatalf("Reserve = %v, %v", ok, err)
	}

	clock.Advance(time.Minute) // the pending k-2 lapses; the completed k-1 lives on
	if _, err := s.Lookup(ctx, "u-1", "k-2"); !errors.Is(err, dispatch.ErrIdempotencyKeyNotFound) {
		t.Fatalf("pending key after its TTL: %v", err)
	}
	if n := s.Sweep(); n != 1 || s.Len() != 1 {
		t.Fatalf("Sweep freed %d, %d left; want 1 and 1", n, s.Len())
	}

	clock.Advance(24*time.Hour - time.Minute - time.Nanosecond)
	if rec, err := s.Lookup(ctx, "u-1", "k-1"); err != nil || rec.RideID != "r-1" {
		t.Fatalf("completed key just before 24 h: %+v, %v", rec, err)
	}
	clock.Advance(time.Nanosecond)
	if _, err := s.Lookup(ctx, "u-1", "k-1"); !errors.Is(err, dispatch.ErrIdempotencyKeyNotFound) {
		t.Fatalf("completed key at 24 h: %v", err)
	}
	if n := s.Sweep(); n != 1 || s.Len() != 0 {
		t.Fatalf("Sweep freed %d, %d left; want 1 and 0", n, s.Len())
	}
}
