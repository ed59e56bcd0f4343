package rider

import (
	"testing"
	"time"

	"github.com/understudy/understudy/dispatch"
)

func TestSubscriberKeepsTheNewestAndNeverBlocks(t *testing.T) {
	h := newHub(4, 8, nil)
	s, err := h.subscribe("r-1", "u-1")
	if err != nil {
		t.Fatal(err)
	}
	other, _ := h.subscribe("r-2", "u-1")
	for v := uint64(1); v <= 1000; v++ { // nobody reads: publish must still return
		h.publish(dispatch.Ride{ID: "r-1", Version: v})
	}
	h.publish(dispatch.Ride{ID: "r-1", Version: 999}) // a late, out-of-order copy
	got := s.take()
	var versions []uint64
	for _, r := range got {
		versions = append(versions, r.Version)
	}
	if len(versions) != 4 || versions[0] != 998 || versions[1] != 999 || versions[2] != 999 || versions[3] != 1000 {
		t.Fatalf("queue holds versions %v, want the newest four in order", versions)
	}
	if len(other.take()) != 0 {
		t.Fatal("r-2's stream got r-1's changes")
	}
	if h.len() != 2 {
		t.Fatalf("%d streams, want 2", h.len())
	}
	if _, err := h.subscribe("r-1", "u-1"); err != nil {
		t.Fatal(err)
	}
	h.unsubscribe(s)
	h.unsubscribe(s) // twice is harmless
	if h.len() != 2 {
		t.Fatalf("%d streams after unsubscribing one, want 2", h.len())
	}
}

func TestLimiterForgetsRefilledBuckets(t *testing.T) {
	l := newLimiter(1, 2)
	now := time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)
	for i := range 2 {
		if _, ok := l.allow("u-1", now); !ok {
			t.Fatalf("request %d refused within the burst", i)
		}
	}
	if wait, ok := l.allow("u-1", now); ok || wait != time.Second {
		t.Fatalf("third request: ok %v, wait %s; want refused for 1 s", ok, wait)
	}
	l.sweep(now)
	if l.len() != 1 {
		t.Fatal("sweep forgot a bucket that is not full")
	}
	l.sweep(now.Add(2 * time.Second))
	if l.len() != 0 {
		t.Fatal("sweep kept a refilled bucket")
	}
}
