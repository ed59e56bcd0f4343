package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
)

// RunIdempotency checks the dispatch.IdempotencyStore behaviour the rider API relies
// on. newStore returns an empty store on the real clock: expiry is checked with short
// TTLs and polling, so a Redis store whose TTLs run on the server passes the same way.
func RunIdempotency(t *testing.T, newStore func(tb testing.TB) dispatch.IdempotencyStore) {
	t.Helper()
	ctx := context.Background()
	const day = 24 * time.Hour

	t.Run("unknown keys are not found", func(t *testing.T) {
		s := newStore(t)
		if _, err := s.Lookup(ctx, "u-1", "k-none"); !errors.Is(err, dispatch.ErrIdempotencyKeyNotFound) {
			t.Fatalf("Lookup: got %v, want ErrIdempotencyKeyNotFound", err)
		}
	})

	t.Run("reserve, then replay and conflict see the first request", func(t *testing.T) {
		s := newStore(t)
		before := time.Now()
		rec, ok, err := s.Reserve(ctx, "u-1", "k-1", "fp-a", day)
		if err != nil || !ok {
			t.Fatalf("first Reserve = %v, %v", ok, err)
		}
		if rec.Fingerprint != "fp-a" || rec.Done() || rec.ExpiresAt.Before(before.Add(day-time.Minute)) {
			t.Fatalf("reserved record = %+v", rec)
		}
		for _, fp := range []string{"fp-a", "fp-b"} {
			got, ok, err := s.Reserve(ctx, "u-1", "k-1", fp, day)
			if err != nil || ok {
				t.Fatalf("Reserve again with %s = %v, %v; want the live record", fp, ok, err)
			}
			if got.Fingerprint != "fp-a" || got.Done() {
				t.Fatalf("Reserve again with %s returned %+v, want the pending fp-a record", fp, got)
			}
		}
		if err := s.Complete(ctx, "u-1", "k-1", "fp-a", "r-1", day); err != nil {
			t.Fatalf("Complete: %v", err)
		}
		got, err := s.Lookup(ctx, "u-1", "k-1")
		if err != nil || !got.Done() || got.RideID != "r-1" || got.Fingerprint != "fp-a" {
			t.Fatalf("Lookup after Complete = %+v, %v", got, err)
		}
		got, ok, err = s.Reserve(ctx, "u-1", "k-1", "fp-a", day)
		if err != nil || ok || got.RideID != "r-1" {
			t.Fatalf("Reserve after Complete = %+v, %v, %v; want the done record", got, ok, err)
		}
	})

	t.Run("complete needs the live pending reservation of that fingerprint", func(t *testing.T) {
		s := newStore(t)
		if err := s.Complete(ctx, "u-1", "k-none", "fp-a", "r-1", day); !errors.Is(err, dispatch.ErrIdempotencyNotReserved) {
			t.Fatalf("Complete of an unknown key: got %v, want ErrIdempotencyNotReserved", err)
		}
		mustReserve(t, s, "u-1", "k-1", "fp-a", day)
		if err := s.Complete(ctx, "u-1", "k-1", "fp-b", "r-1", day); !errors.Is(err, dispatch.ErrIdempotencyNotReserved) {
			t.Fatalf("Complete with another fingerprint: got %v, want ErrIdempotencyNotReserved", err)
		}
		if err := s.Complete(ctx, "u-1", "k-1", "fp-a", "r-1", day); err != nil {
			t.Fatal(err)
		}
		if err := s.Complete(ctx, "u-1", "k-1", "fp-a", "r-2", day); !errors.Is(err, dispatch.ErrIdempotencyNotReserved) {
			t.Fatalf("second Complete: got %v, want ErrIdempotencyNotReserved", err)
		}
		if got, _ := s.Lookup(ctx, "u-1", "k-1"); got.RideID != "r-1" {
			t.Fatalf("second Complete overwrote the ride: %+v", got)
		}
	})

	t.Run("release frees a pending key and nothing else", func(t *testing.T) {
		s := newStore(t)
		mustReserve(t, s, "u-1", "k-1", "fp-a", day)
		if err := s.Release(ctx, "u-1", "k-1", "fp-b"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Lookup(ctx, "u-1", "k-1"); err != nil {
			t.Fatalf("Release with another fingerprint freed the key: %v", err)
		}
		if err := s.Release(ctx, "u-1", "k-1", "fp-a"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Lookup(ctx, "u-1", "k-1"); !errors.Is(err, dispatch.ErrIdempotencyKeyNotFound) {
			t.Fatalf("Lookup after Release: got %v, want ErrIdempotencyKeyNotFound", err)
		}
		mustReserve(t, s, "u-1", "k-1", "fp-b", day) // a retry may now run
		if err := s.Complete(ctx, "u-1", "k-1", "fp-b", "r-1", day); err != nil {
			t.Fatal(err)
		}
		if err := s.Release(ctx, "u-1", "k-1", "fp-b"); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Lookup(ctx, "u-1", "k-1"); err != nil || got.RideID != "r-1" {
			t.Fatalf("Release removed a completed record: %+v, %v", got, err)
		}
		if err := s.Release(ctx, "u-1", "k-none", "fp-a"); err != nil {
			t.Fatalf("Release of nothing: %v", err)
		}
	})

	t.Run("keys are scoped", func(t *testing.T) {
		s := newStore(t)
		mustReserve(t, s, "u-1", "k-1", "fp-a", day)
		mustReserve(t, s, "u-2", "k-1", "fp-b", day)
		if err := s.Complete(ctx, "u-2", "k-1", "fp-b", "r-2", day); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Lookup(ctx, "u-1", "k-1"); err != nil || got.Done() || got.Fingerprint != "fp-a" {
			t.Fatalf("u-1's key after u-2 completed its own: %+v, %v", got, err)
		}
	})

	t.Run("records expire", func(t *testing.T) {
		s := newStore(t)
		const short = 30 * time.Millisecond
		mustReserve(t, s, "u-1", "pending", "fp-a", short)
		mustReserve(t, s, "u-1", "done", "fp-a", day)
		if err := s.Complete(ctx, "u-1", "done", "fp-a", "r-1", short); err != nil {
			t.Fatal(err)
		}
		for _, key := range []string{"pending", "done"} {
			dispatchtest.Eventually(t, func() error {
				rec, err := s.Lookup(ctx, "u-1", key)
				if errors.Is(err, dispatch.ErrIdempotencyKeyNotFound) {
					return nil
				}
				return fmt.Errorf("key %q past its TTL: Lookup = %+v, %v; want not found", key, rec, err)
			})
		}
		if err := s.Complete(ctx, "u-1", "pending", "fp-a", "r-1", day); !errors.Is(err, dispatch.ErrIdempotencyNotReserved) {
			t.Fatalf("Complete after the reservation expired: got %v, want ErrIdempotencyNotReserved", err)
		}
		mustReserve(t, s, "u-1", "done", "fp-b", day) // an expired key is free again
	})

	t.Run("concurrent reservations of one key: exactly one wins", func(t *testing.T) {
		s := newStore(t)
		const n = 32
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			wins []string
		)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				fp := fmt.Sprintf("fp-%d", i)
				rec, ok, err := s.Reserve(ctx, "u-1", "k-1", fp, day)
				if err != nil {
					t.Errorf("Reserve: %v", err)
					return
				}
				if ok {
					mu.Lock()
					wins = append(wins, rec.Fingerprint)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if len(wins) != 1 {
			t.Fatalf("%d reservations won, want exactly 1", len(wins))
		}
		if got, err := s.Lookup(ctx, "u-1", "k-1"); err != nil || got.Fingerprint != wins[0] {
			t.Fatalf("stored record %+v, %v; the winner was %s", got, err, wins[0])
		}
	})
}

func mustReserve(tb testing.TB, s dispatch.IdempotencyStore, scope, key, fp string, ttl time.Duration) {
	tb.Helper()
	rec, ok, err := s.Reserve(context.Background(), scope, key, fp, ttl)
	if err != nil || !ok {
		tb.Fatalf("Reserve(%s, %s, %s) = %+v, %v, %v; want a fresh reservation", scope, key, fp, rec, ok, err)
	}
}
