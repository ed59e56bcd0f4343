package rider

import (
	"testing"

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
