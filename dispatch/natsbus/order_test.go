package natsbus_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
	"github.com/understudy/understudy/dispatch/natsbus"
)

// A driver freed by a cancel is put back into supply after the cancel is published:
// the other replicas must hear the cancel first, or one of them may offer the driver
// a new ride before its gateway has told the driver the old one is over. So an event
// queued before a supply change is never sent after it, however the flush timer falls.
func TestEventsGoOutBeforeLaterSupplyChanges(t *testing.T) {
	url := mustStartNATS(t)
	a := mustOpenBus(t, url, "seoul", func(b *natsbus.Bus) { b.FlushInterval = 50 * time.Microsecond })
	b := mustOpenBus(t, url, "seoul", nil)
	const n = 10000
	for i := range n {
		id := fmt.Sprintf("d-%d", i)
		a.Forward(dispatch.Event{Type: dispatch.EventRideCancelled, DriverID: id, Ride: dispatch.Ride{ID: fmt.Sprintf("r-%d", i)}})
		a.Tell(dispatch.PeerEvent{Type: dispatch.PeerSupply, DriverID: id, Location: &gangnam})
	}
	dispatchtest.Eventually(t, func() error {
		if got := len(b.engine.heardInOrder()); got != 2*n {
			return fmt.Errorf("B's engine heard %d of %d events", got, 2*n)
		}
		return nil
	})
	cancelled := make(map[string]bool)
	for k, ev := range b.engine.heardInOrder() {
		switch {
		case !ev.peer && ev.typ == string(dispatch.EventRideCancelled):
			cancelled[ev.driverID] = true
		case ev.peer && ev.typ == string(dispatch.PeerSupply):
			if !cancelled[ev.driverID] {
				t.Fatalf("event %d: %s back in supply before its ride_cancelled was sent", k, ev.driverID)
			}
		}
	}
}
