package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
	"github.com/understudy/understudy/driver"
	"github.com/understudy/understudy/driver/client"
	"github.com/understudy/understudy/driver/drivertest"
	"github.com/understudy/understudy/rider"
	riderclient "github.com/understudy/understudy/rider/client"
)

// regionSecret makes the regions of a test share one token secret, as a deployment's
// regions do, so one token is good at all of them.
func regionSecret(t *testing.T) {
	t.Setenv("UNDERSTUDY_SECRET", "a-secret-all-regions-share")
}

// The Go rider client asked at north for a pickup in south's area ends up with the
// ride created at south, and its later calls for that ride go to south.
func TestRiderClientFollowsWrongRegion(t *testing.T) {
	regionSecret(t)
	d := mustRegions(t, "--match-interval", "0")
	c := riderClient(t, d.north, "u-1", dispatch.RoleRider)
	at := func(s *server) *riderclient.Client {
		c := riderClient(t, s, "u-1", dispatch.RoleRider)
		c.Retries = 0
		return c
	}
	ctx := riderCtx(t)
	req := rider.RideRequest{Pickup: atSouth, Dropoff: atNorth}

	if est, err := c.Estimate(ctx, req); err != nil || est.Fare.Amount <= 0 {
		t.Fatalf("estimate of a pickup in south's area, asked at north: %+v %v, want south's quote", est, err)
	}
	key := riderclient.NewKey()
	ride, err := c.RequestRide(ctx, req, key)
	if err != nil {
		t.Fatalf("ride request in south's area, asked at north: %v", err)
	}
	if got, err := at(d.south).Ride(ctx, ride.ID); err != nil || got.ID != ride.ID {
		t.Fatalf("south does not have ride %s: %+v %v", ride.ID, got, err)
	}
	if _, err := at(d.north).Ride(ctx, ride.ID); err == nil {
		t.Errorf("north has ride %s too", ride.ID)
	}
	if want := "http://" + d.south.Addr(); c.RideURL(ride.ID) != want {
		t.Errorf("client keeps ride %s at %s, want %s", ride.ID, c.RideURL(ride.ID), want)
	}
	// The same key again is the same ride (south's idempotency), not a second one.
	if again, err := c.RequestRide(ctx, req, key); err != nil || again.ID != ride.ID {
		t.Errorf("same key again: %+v %v, want ride %s", again, err, ride.ID)
	}
	// Later calls for the ride go to south on their own.
	if got, err := c.Ride(ctx, ride.ID); err != nil || got.ID != ride.ID {
		t.Errorf("get: %+v %v", got, err)
	}
	st, err := c.Follow(ctx, ride.ID, 0)
	if err != nil {
		t.Fatalf("follow: %v", err)
	}
	if r := riderNext(t, st); r.ID != ride.ID {
		t.Errorf("follow's first event is ride %s, want %s", r.ID, ride.ID)
	}
	if got, err := c.Cancel(ctx, ride.ID); err != nil || got.Status != dispatch.RideCancelled {
		t.Errorf("cancel: %+v %v, want cancelled", got, err)
	}
	if err := st.Err(); err != nil {
		t.Errorf("follow ended with %v, want the final status", err)
	}

	// A pickup in no area is an error the caller can tell apart.
	_, err = c.RequestRide(ctx, rider.RideRequest{Pickup: atNowhere, Dropoff: atNorth}, "")
	if !errors.Is(err, riderclient.ErrOutsideServiceArea) || riderclient.Code(err) != "outside_service_area" {
		t.Errorf("pickup in no area: %v, want ErrOutsideServiceArea", err)
	}
	if _, err := c.Estimate(ctx, rider.RideRequest{Pickup: atNowhere, Dropoff: atNorth}); !errors.Is(err, riderclient.ErrOutsideServiceArea) {
		t.Errorf("estimate in no area: %v, want ErrOutsideServiceArea", err)
	}
}

// The Go driver client that drives from north into south's area is sent on by north
// (reconnect, close 4002), dials south with the same token and is welcomed there.
func TestDriverClientFollowsReconnect(t *testing.T) {
	regionSecret(t)
	d := mustRegions(t, "--match-interval", "0")
	var closes []int
	dialer := client.Dialer{OnDisconnect: func(err error) { closes = append(closes, closeCode(err)) }}
	c, welcome := mustDial(t, d.north, "d-1", dialer)
	if welcome.DriverID != "d-1" {
		t.Fatalf("welcome %s", welcome.Raw)
	}
	ctx, cancel := context.WithTimeout(context.Background(), frameWait)
	defer cancel()
	locate := func(p dispatch.Point, ref string) {
		t.Helper()
		if err := c.Send(ctx, driver.Frame{Type: driver.TypeLocation, Lat: &p.Lat, Lng: &p.Lng, Ref: ref}); err != nil {
			t.Fatalf("location %s: %v", ref, err)
		}
	}
	locate(atNorth, "l0")
	drivertest.Next(t, c, driver.TypeAck)
	for i := 1; i <= 2; i++ {
		locate(atSouth, fmt.Sprint("l", i))
		drivertest.Next(t, c, driver.TypeAck)
	}
	locate(atSouth, "l3") // the third in a row: north sends the driver on
	rc := drivertest.Next(t, c, driver.TypeReconnect)
	w := drivertest.Next(t, c, driver.TypeWelcome)
	if w.DriverID != "d-1" {
		t.Errorf("welcome after the move: %s", w.Raw)
	}
	if want := driverURL(d.south); c.URL() != want {
		t.Errorf("client dials %s after %s, want %s", c.URL(), rc.Raw, want)
	}
	if len(closes) != 1 || closes[0] != driver.CloseReconnect {
		t.Errorf("OnDisconnect heard close codes %v, want [%d]", closes, driver.CloseReconnect)
	}
	// South has the driver now and takes its locations.
	locate(atSouth, "s1")
	if m := drivertest.Next(t, c, driver.TypeAck); m.Ref != "s1" {
		t.Errorf("ack %s, want s1's", m.Raw)
	}
	dispatchtest.Eventually(t, func() error {
		st, err := d.south.engine.Riders().Driver(context.Background(), "d-1")
		if err != nil {
			return err
		}
		if st.Location == nil || *st.Location != atSouth {
			return fmt.Errorf("south has d-1 at %v, want %v", st.Location, atSouth)
		}
		return nil
	})
}

// Riders following their rides' event streams while an admin moves the rides' area
// to another region and back get every status change and no error: each move ends
// the streams at the region that gave the area up, which sends the client on (421)
// to a region that may not have adopted the ride yet (404 for a moment), and the
// client resumes there once it has.
func TestRiderClientFollowsARideAcrossAnAreaMove(t *testing.T) {
	regionSecret(t)
	d := mustRegions(t, "--match-interval", "0")
	ctx := riderCtx(t)
	// A stream that breaks for good shows here at once, not after the next step.
	type item struct {
		ride rider.Ride
		end  bool // the stream is closed, for err
		err  error
	}
	type follower struct {
		id    string
		items chan item
	}
	follow := func(c *riderclient.Client, id string) follower {
		st, err := c.Follow(ctx, id, 0)
		if err != nil {
			t.Fatalf("follow ride %s: %v", id, err)
		}
		f := follower{id: id, items: make(chan item, 16)}
		go func() {
			for r := range st.C {
				f.items <- item{ride: r}
			}
			f.items <- item{end: true, err: st.Err()}
		}()
		return f
	}
	take := func(f follower, what string) item {
		t.Helper()
		select {
		case it := <-f.items:
			return it
		case <-time.After(riderWait):
			t.Fatalf("ride %s: no %s within %s", f.id, what, riderWait)
		}
		return item{}
	}
	// A resumed stream starts with the ride's state when it is newer than the last
	// event: the same status again at a later version (a new search at the region
	// that adopted it) is no change of status.
	seen := map[string]dispatch.RideStatus{}
	next := func(f follower, want dispatch.RideStatus) {
		t.Helper()
		for {
			it := take(f, string(want))
			switch {
			case it.end:
				t.Fatalf("ride %s: the stream ended waiting for %s: %v", f.id, want, it.err)
			case it.ride.Status == seen[f.id]:
				continue
			case it.ride.Status != want:
				t.Fatalf("ride %s: event %s after %s, want %s", f.id, it.ride.Status, seen[f.id], want)
			}
			seen[f.id] = want
			return
		}
	}
	ended := func(f follower) {
		t.Helper()
		switch it := take(f, "end of the stream"); {
		case !it.end:
			t.Fatalf("ride %s: event %s after the final one", f.id, it.ride.Status)
		case it.err != nil:
			t.Fatalf("ride %s: the stream ended with %v, want the final status", f.id, it.err)
		}
	}
	move := func(s *server, to string) {
		t.Helper()
		if code, res := moveArea(t, s, "busan", to); code != http.StatusOK || res.To != to {
			t.Fatalf("move busan to %s: %d %+v", to, code, res)
		}
	}
	redial := func(c *client.Client, s *server) *client.Client {
		t.Helper()
		drivertest.Next(t, c, driver.TypeReconnect)
		at, w := mustDial(t, s, "d-1", client.Dialer{})
		if w.Ride == nil {
			t.Fatalf("d-1 welcomed at %s without its ride: %s", s.cfg.Region, w.Raw)
		}
		return at
	}

	// Ride one is created at south, which serves busan; its driver takes it there.
	dc := mustOnline(t, d.south, "d-1", atEast)
	alice := riderClient(t, d.south, "u-1", dispatch.RoleRider)
	one, err := alice.RequestRide(ctx, rider.RideRequest{Pickup: atEast, Dropoff: atNorth}, "")
	if err != nil {
		t.Fatal(err)
	}
	f1 := follow(alice, one.ID)
	next(f1, dispatch.RideSearching)
	accept(t, dc, one.ID)
	next(f1, dispatch.RideMatched)

	// Handed over to north, which never had ride one.
	move(d.south, "north")
	dc = redial(dc, d.north)
	steps(t, dc, one.ID, "arrived")
	next(f1, dispatch.RideArrived)
	// Ride two is created at north (the client asks south and is sent on), so south
	// never had it.
	bob := riderClient(t, d.south, "u-2", dispatch.RoleRider)
	two, err := bob.RequestRide(ctx, rider.RideRequest{Pickup: atEast, Dropoff: atNorth}, "")
	if err != nil {
		t.Fatal(err)
	}
	f2 := follow(bob, two.ID)
	next(f2, dispatch.RideSearching)

	// And back to south.
	move(d.north, "south")
	dc = redial(dc, d.south)
	steps(t, dc, one.ID, "start")
	next(f1, dispatch.RideInProgress)
	steps(t, dc, one.ID, "complete")
	next(f1, dispatch.RideCompleted)
	ended(f1)
	if _, err := bob.Cancel(ctx, two.ID); err != nil {
		t.Fatalf("cancel ride two after the hand-back: %v", err)
	}
	next(f2, dispatch.RideCancelled)
	ended(f2)
}
