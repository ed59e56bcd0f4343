package rider_test

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
	"github.com/understudy/understudy/rider"
)

// assignedTrip has alice request a ride that driver d-1 is offered (not yet answered).
func assignedTrip(t *testing.T, e *env) (token, rideID, offerID string) {
	t.Helper()
	e.driverAt("d-1", dispatch.Point{Lat: 37.567, Lng: 126.979})
	token = e.token("u-alice", dispatch.RoleRider)
	r := e.mustRequest(token)
	if err := e.engine.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	d, err := e.engine.Riders().Driver(context.Background(), "d-1")
	if err != nil || d.OfferID == "" {
		t.Fatalf("driver after a step: %+v, %v; want an offer", d, err)
	}
	return token, r.ID, d.OfferID
}

func TestEventsStreamEveryStatusThenEnd(t *testing.T) {
	e := mustOpenAPI(t, func(e *env) { e.api.Config.Heartbeat = 5 * time.Millisecond })
	ctx := context.Background()
	alice, rideID, offerID := assignedTrip(t, e)
	s := e.openEvents(alice, rideID, "")
	if ct := s.resp.Header.Get("Content-Type"); s.resp.StatusCode != 200 || ct != "text/event-stream" {
		t.Fatalf("events = %d %q", s.resp.StatusCode, ct)
	}
	first, id := s.nextRide(t)
	if first.ID != rideID || first.Status != dispatch.RideSearching || first.Driver != nil {
		t.Fatalf("first event %+v, want the current (searching) state", first)
	}
	// Idle: heartbeats keep the connection open.
	for f := range s.frames {
		if f.Comment != "" {
			break
		}
		t.Fatalf("event %+v while idle, want a heartbeat", f)
	}
	steps := []struct {
		do   func() (dispatch.Ride, error)
		want dispatch.RideStatus
	}{
		{func() (dispatch.Ride, error) { return e.engine.Drivers().Accept(ctx, "d-1", offerID) }, dispatch.RideMatched},
		{func() (dispatch.Ride, error) { return e.engine.Drivers().Arrived(ctx, "d-1", rideID) }, dispatch.RideArrived},
		{func() (dispatch.Ride, error) { return e.engine.Drivers().Start(ctx, "d-1", rideID) }, dispatch.RideInProgress},
		{func() (dispatch.Ride, error) { return e.engine.Drivers().Complete(ctx, "d-1", rideID) }, dispatch.RideCompleted},
	}
	prev, _ := strconv.ParseUint(id, 10, 64)
	for _, step := range steps {
		r, err := step.do()
		if err != nil {
			t.Fatalf("%s: %v", step.want, err)
		}
		got, id := s.nextRide(t)
		n, err := strconv.ParseUint(id, 10, 64)
		if err != nil || n <= prev || n != r.Version {
			t.Fatalf("event id %q after %d, want the ride's version %d", id, prev, r.Version)
		}
		prev = n
		if got.Status != step.want || got.Driver == nil || got.Driver.ID != "d-1" {
			t.Fatalf("event %+v, want %s with driver d-1", got, step.want)
		}
	}
	s.ended(t)
}

func TestEventsResumeFromLastEventID(t *testing.T) {
	e := mustOpenAPI(t)
	ctx := context.Background()
	alice, rideID, offerID := assignedTrip(t, e)
	matched, err := e.engine.Drivers().Accept(ctx, "d-1", offerID)
	if err != nil {
		t.Fatal(err)
	}
	v := strconv.FormatUint(matched.Version, 10)

	// Up to date: nothing until the next change.
	s := e.openEvents(alice, rideID, v)
	if _, err := e.engine.Drivers().Arrived(ctx, "d-1", rideID); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.nextRide(t); got.Status != dispatch.RideArrived {
		t.Fatalf("first event after resuming at %s: %s, want arrived", v, got.Status)
	}
	s.close()

	// Behind: the current state at once.
	s = e.openEvents(alice, rideID, v)
	if got, _ := s.nextRide(t); got.Status != dispatch.RideArrived {
		t.Fatalf("resuming from %s after arrival: %s, want arrived", v, got.Status)
	}
	s.close()

	if _, err := e.engine.Drivers().Start(ctx, "d-1", rideID); err != nil {
		t.Fatal(err)
	}
	done, err := e.engine.Drivers().Complete(ctx, "d-1", rideID)
	if err != nil {
		t.Fatal(err)
	}
	s = e.openEvents(alice, rideID, v)
	if got, id := s.nextRide(t); got.Status != dispatch.RideCompleted || id != strconv.FormatUint(done.Version, 10) {
		t.Fatalf("resuming a finished ride: %s id %s", got.Status, id)
	}
	s.ended(t)

	// An id the ride never had starts over with the current state.
	s = e.openEvents(alice, rideID, strconv.FormatUint(done.Version+100, 10))
	if got, _ := s.nextRide(t); got.Status != dispatch.RideCompleted {
		t.Fatalf("resuming from an unknown id: %s, want the current state", got.Status)
	}
	s.ended(t)

	// Already has the final state: 204 tells EventSource to stop reconnecting.
	resp, _ := e.do("GET", "/v1/rides/"+rideID+"/events", alice, "", "Last-Event-ID", strconv.FormatUint(done.Version, 10))
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("resuming at the final event = %d, want 204", resp.StatusCode)
	}
}

func TestEventsOfAFinishedRideEndAfterItsState(t *testing.T) {
	e := mustOpenAPI(t)
	alice := e.token("u-alice", dispatch.RoleRider)
	r := e.mustRequest(alice)
	if _, b := e.do("POST", "/v1/rides/"+r.ID+"/cancel", alice, ""); len(b) == 0 {
		t.Fatal("cancel answered nothing")
	}
	s := e.openEvents(e.token("ops", dispatch.RoleAdmin), r.ID, "")
	if got, _ := s.nextRide(t); got.Status != dispatch.RideCancelled {
		t.Fatalf("admin's stream of a cancelled ride: %s", got.Status)
	}
	s.ended(t)
}

func TestDrainEndsStreamsAndRefusesNewOnes(t *testing.T) {
	e := mustOpenAPI(t)
	alice := e.token("u-alice", dispatch.RoleRider)
	r := e.mustRequest(alice)
	s := e.openEvents(alice, r.ID, "")
	s.nextRide(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.api.Drain(ctx); err != nil {
		t.Fatalf("drain: %v", err)
	}
	s.ended(t)
	resp, b := e.do("GET", "/v1/rides/"+r.ID+"/events", alice, "")
	checkProblem(t, resp, b, 503, dispatch.ECodeUnavailable)
}

func TestStreamsPerRiderAreCapped(t *testing.T) {
	e := mustOpenAPI(t, func(e *env) { e.api.Config.MaxStreamsPerRider = 2 })
	alice := e.token("u-alice", dispatch.RoleRider)
	r := e.mustRequest(alice)
	a, b := e.openEvents(alice, r.ID, ""), e.openEvents(alice, r.ID, "")
	a.nextRide(t)
	b.nextRide(t)
	resp, body := e.do("GET", "/v1/rides/"+r.ID+"/events", alice, "")
	checkProblem(t, resp, body, 429, dispatch.ECodeRateLimited)
	a.close()
	dispatchtest.Eventually(t, func() error {
		s := e.openEvents(alice, r.ID, "")
		defer s.close()
		if s.resp.StatusCode != http.StatusOK {
			return fmt.Errorf("a stream after one closed: %s, want 200 once its slot is free", s.resp.Status)
		}
		return nil
	})
}

func TestEventsCatchChangesNoNotificationToldOf(t *testing.T) {
	e := mustOpenAPI(t, func(e *env) { e.api.Config.Heartbeat = 5 * time.Millisecond })
	alice := e.token("u-alice", dispatch.RoleRider)
	r := e.mustRequest(alice)
	s := e.openEvents(alice, r.ID, "")
	s.nextRide(t)
	// Another replica cancels the ride: the store changes, this engine hears nothing.
	stored, err := e.engine.Store.Ride(context.Background(), r.ID)
	if err != nil {
		t.Fatal(err)
	}
	stored.Status = dispatch.RideCancelled
	if err := e.engine.Store.Commit(context.Background(), dispatch.Tx{Epoch: e.engine.Epoch, Rides: []dispatch.Ride{stored}}); err != nil {
		t.Fatal(err)
	}
	if got, id := s.nextRide(t); got.Status != dispatch.RideCancelled || id != strconv.FormatUint(stored.Version+1, 10) {
		t.Fatalf("event %s id %s, want cancelled at version %d", got.Status, id, stored.Version+1)
	}
	s.ended(t)
}

// The driver's position shows the same way on GET and on the stream: in the ride at
// each change, and, while the driver is on the way or on board, in location events
// (no id) when it moved.
func TestEventsShowTheDriverWhereItIs(t *testing.T) {
	e := mustOpenAPI(t, func(e *env) { e.api.Config.LocationInterval = 5 * time.Millisecond })
	ctx := context.Background()
	alice, rideID, offerID := assignedTrip(t, e)
	start := dispatch.Point{Lat: 37.567, Lng: 126.979}
	s := e.openEvents(alice, rideID, "")
	if got, _ := s.nextRide(t); got.Driver != nil {
		t.Fatalf("searching ride shows a driver: %+v", got.Driver)
	}
	if _, err := e.engine.Drivers().Accept(ctx, "d-1", offerID); err != nil {
		t.Fatal(err)
	}
	matched, _ := s.nextRide(t)
	if matched.Status != dispatch.RideMatched || matched.Driver == nil || matched.Driver.Location == nil || *matched.Driver.Location != start {
		t.Fatalf("matched event %+v, want driver d-1 at %v", matched, start)
	}

	moved := dispatch.Point{Lat: 37.5668, Lng: 126.9785}
	if err := e.engine.Drivers().UpdateLocation(ctx, "d-1", moved); err != nil {
		t.Fatal(err)
	}
	loc := s.nextLocation(t)
	if loc.Status != dispatch.RideMatched || loc.ID != rideID || loc.Driver == nil || loc.Driver.ID != "d-1" || *loc.Driver.Location != moved {
		t.Fatalf("location event %+v, want the matched ride with d-1 at %v", loc, moved)
	}
	if _, b := e.do("GET", "/v1/rides/"+rideID, alice, ""); *decode[rider.Ride](t, b).Driver.Location != moved {
		t.Fatalf("GET after the move: %s, want the driver at %v", b, moved)
	}
	// A driver standing still sends nothing: the next event is the next change.
	if _, err := e.engine.Drivers().Arrived(ctx, "d-1", rideID); err != nil {
		t.Fatal(err)
	}
	f, _ := s.next(t)
	arrived := decode[rider.Ride](t, []byte(f.Data))
	if f.Event != "" || arrived.Status != dispatch.RideArrived || *arrived.Driver.Location != moved {
		t.Fatalf("after standing still: %+v, want the arrived event with the driver at %v", f, moved)
	}
	s.close()

	// A stream resumed with nothing new to say still follows the driver.
	s = e.openEvents(alice, rideID, f.ID)
	again := dispatch.Point{Lat: 37.5666, Lng: 126.9782}
	if err := e.engine.Drivers().UpdateLocation(ctx, "d-1", again); err != nil {
		t.Fatal(err)
	}
	dispatchtest.Eventually(t, func() error { // the first one may still show the earlier position
		if loc := s.nextLocation(t); *loc.Driver.Location != again || loc.Status != dispatch.RideArrived {
			return fmt.Errorf("location event %+v, want the arrived ride with its driver at %v", loc, again)
		}
		return nil
	})
	if _, err := e.engine.Drivers().Start(ctx, "d-1", rideID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.engine.Drivers().Complete(ctx, "d-1", rideID); err != nil {
		t.Fatal(err)
	}
	var last rider.Ride
	for f := range s.frames {
		if f.Comment == "" && f.Event == "" {
			last = decode[rider.Ride](t, []byte(f.Data))
		}
	}
	if last.Status != dispatch.RideCompleted || last.Driver == nil || last.Driver.Location != nil {
		t.Fatalf("last event %+v, want completed with the driver's location no longer shown", last)
	}
}

// nextLocation returns the next location event's ride, which carries no id.
func (s *sseStream) nextLocation(tb testing.TB) rider.Ride {
	tb.Helper()
	for {
		f, ok := s.next(tb)
		if !ok {
			tb.Fatal("the stream ended before a location event")
		}
		if f.Event == "location" {
			if f.ID != "" {
				tb.Fatalf("location event with id %q: Last-Event-ID must stay the ride's version", f.ID)
			}
			return decode[rider.Ride](tb, []byte(f.Data))
		}
	}
}
