package memstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/understudy/understudy/dispatch/memstore"
)

func TestRateLimiterForgetsRefilledBuckets(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)
	l := memstore.NewRateLimiter(1, 2)
	l.Now = func() time.Time { return now }
	for i := range 2 {
		if _, ok, err := l.Allow(ctx, "rider:u-1"); !ok || err != nil {
			t.Fatalf("request %d refused within the burst: %v", i, err)
		}
	}
	if wait, ok, _ := l.Allow(ctx, "rider:u-1"); ok || wait != time.Second {
		t.Fatalf("third request: ok %v, wait %s; want refused for 1 s", ok, wait)
	}
	if _, ok, _ := l.Allow(ctx, "driver:u-1"); !ok {
		t.Fatal("another caller was refused")
	}
	now = now.Add(1500 * time.Millisecond) // the driver's bucket is full again, the rider's not yet
	if n := l.Sweep(); n != 1 || l.Len() != 1 {
		t.Fatalf("sweep forgot %d buckets and kept %d; want the refilled one gone, the other kept", n, l.Len())
	}
	now = now.Add(2 * time.Second)
	if n := l.Sweep(); n != 1 || l.Len() != 0 {
		t.Fatalf("sweep forgot %d and kept %d buckets; want none kept", n, l.Len())
	}
}
