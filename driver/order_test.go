package driver_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/driver"
	"github.com/understudy/understudy/driver/client"
	"github.com/understudy/understudy/driver/drivertest"
)

// syncFrames sends a location with a ref and returns the frames c hears before its ack.
func syncFrames(tb testing.TB, c *client.Client, ref string) []driver.Message {
	tb.Helper()
	must(tb, c.Send(context.Background(), driver.Frame{Type: driver.TypeLocation, Lat: &near.Lat, Lng: &near.Lng, Ref: ref}))
	var got []driver.Message
	deadline := time.After(drivertest.Wait)
	for {
		select {
		case m, ok := <-c.Frames():
			if !ok {
				tb.Fatalf("socket ended waiting for ack %s: %v", ref, c.Err())
			}
			if m.Type == driver.TypeAck && m.Ref == ref {
				return got
			}
			got = append(got, m)
		case <-deadline:
			tb.Fatalf("no ack %s within %s; heard %v", ref, drivertest.Wait, got)
		}
	}
}

// Events of one ride that reach the gateway out of order (two replicas' events crossed
// on the bus) are sent in version order or not at all: the driver never hears an
// older state of its ride after a newer one.
func TestGatewayNeverShowsAnOlderRideLast(t *testing.T) {
	r := mustOpenRegion(t, nil)
	c := r.online(t, "d-1", near)
	ride, err := r.engine.Riders().RequestRide(context.Background(), "u-1", pickup, dropoff)
	must(t, err)
	o := drivertest.Next(t, c, driver.TypeOffer)
	must(t, c.Accept(context.Background(), o.OfferID))
	drivertest.Next(t, c, driver.TypeAssigned)
	matched, err := r.engine.Riders().Ride(context.Background(), ride.ID)
	must(t, err)

	// Another replica cancelled the ride (version +2) and its event overtook one
	// of version +1 (arrived, say) from a third; then the older one comes.
	cancelled := matched
	cancelled.Status, cancelled.Version = dispatch.RideCancelled, matched.Version+2
	older := matched
	older.Version = matched.Version + 1
	r.gw.Notify(dispatch.Event{Type: dispatch.EventRideCancelled, DriverID: "d-1", Ride: cancelled})
	r.gw.Notify(dispatch.Event{Type: dispatch.EventAssigned, DriverID: "d-1", Ride: older})
	r.gw.Notify(dispatch.Event{Type: dispatch.EventAssigned, DriverID: "d-1", Ride: matched})
	got := syncFrames(t, c, "s1")
	if len(got) != 1 || got[0].Type != driver.TypeRideCancelled || got[0].Ride.Status != dispatch.RideCancelled {
		t.Fatalf("after ride_cancelled and two older assigned, the driver heard %s, want ride_cancelled alone", raws(got))
	}

	// A trip step whose commit is older than what the driver heard is answered with
	// the newer ride, so its last frame is still the cancel.
	must(t, c.Arrived(context.Background(), ride.ID))
	m := drivertest.Next(t, c, driver.TypeRide)
	if m.Ride == nil || m.Ride.Status != dispatch.RideCancelled || m.Ref != driver.TypeArrived {
		t.Fatalf("answer to arrived = %s, want the cancelled ride, ref arrived", m.Raw)
	}
}

func raws(ms []driver.Message) string {
	var b strings.Builder
	for _, m := range ms {
		b.Write(m.Raw)
	}
	return b.String()
}

// lateAnswers is an engine whose answers to complete, decline and available return
// only after the engine has offered the driver its next ride, as a reader goroutine
// descheduled right after its engine call would.
type lateAnswers struct {
	driver.Engine
	offered chan string // ride ids offered to d-1, from the region's tap
}

func (e *lateAnswers) waitOffer() { <-e.offered }

func (e *lateAnswers) Complete(ctx context.Context, driverID, rideID string) (dispatch.Ride, error) {
	r, err := e.Engine.Complete(ctx, driverID, rideID)
	e.waitOffer()
	return r, err
}

func (e *lateAnswers) Decline(ctx context.Context, driverID, offerID string) error {
	err := e.Engine.Decline(ctx, driverID, offerID)
	e.waitOffer()
	return err
}

// An offer that a driver's own frame made possible (complete, decline: the driver is
// free again) comes after the frame's answer, never before it.
func TestAnswerComesBeforeTheOfferItMadePossible(t *testing.T) {
	late := &lateAnswers{offered: make(chan string, 16)}
	r := mustOpenRegion(t, func(g *driver.Gateway) {
		late.Engine = g.Engine
		g.Engine = late
	})
	tap := func(ev dispatch.Event) {
		if ev.Type == dispatch.EventOffer && ev.DriverID == "d-1" {
			late.offered <- ev.Ride.ID
		}
	}
	r.tap.Store(&tap)
	c := r.online(t, "d-1", near)
	first, err := r.engine.Riders().RequestRide(context.Background(), "u-1", pickup, dropoff)
	must(t, err)
	o := drivertest.Next(t, c, driver.TypeOffer)
	<-late.offered
	must(t, c.Accept(context.Background(), o.OfferID))
	drivertest.Next(t, c, driver.TypeAssigned)
	for _, step := range []func(context.Context, string) error{c.Arrived, c.Start} {
		must(t, step(context.Background(), first.ID))
		drivertest.Next(t, c, driver.TypeRide)
	}
	// Two more rides wait: complete frees the driver for the second, declining that
	// one frees it for the third.
	_, err = r.engine.Riders().RequestRide(context.Background(), "u-2", pickup, dropoff)
	must(t, err)
	_, err = r.engine.Riders().RequestRide(context.Background(), "u-3", pickup, dropoff)
	must(t, err)
	must(t, c.Complete(context.Background(), first.ID))
	if m := drivertest.Next(t, c, driver.TypeRide); m.Ride.Status != dispatch.RideCompleted {
		t.Fatalf("answer to complete = %s", m.Raw)
	}
	second := drivertest.Next(t, c, driver.TypeOffer)
	must(t, c.Decline(context.Background(), second.OfferID))
	drivertest.Next(t, c, driver.TypeAck)
	if third := drivertest.Next(t, c, driver.TypeOffer); third.RideID == second.RideID {
		t.Fatalf("offered %s again after declining it", third.RideID)
	}
}
