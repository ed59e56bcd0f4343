package main

import (
	"context"
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

// killableDeployment is the three-region deployment of mustRegions with east up too,
// as the real binary, so a test can kill it (SIGKILL).
type killableDeployment struct {
	north, south *server
	east         *proc
}

func mustRegionsEastKillable(tb testing.TB, args ...string) killableDeployment {
	tb.Helper()
	north, east, south, common := regionsOnOneNATS(tb)
	d := killableDeployment{north: serveRegion(tb, "north", north, common, args), south: serveRegion(tb, "south", south, common, args)}
	d.east = startProc(tb, append(append([]string{"--addr", east, "--data-dir", tb.TempDir(), "--region", "east"}, common...), args...)...)
	// On a busy machine the binary can come up after its home's head start at a cold
	// start (two lease times), and south then serves busan: move it home first.
	dispatchtest.Eventually(tb, func() error {
		if by, epoch, _ := d.south.leases.ServedBy("busan"); by == "" || epoch == 0 {
			return fmt.Errorf("nobody serves busan yet")
		}
		if !probeHealthz(tb.Context(), http.DefaultClient, "http://"+east) {
			return fmt.Errorf("east is not up yet")
		}
		return nil
	})
	if by, _, _ := d.south.leases.ServedBy("busan"); by != "east" {
		dispatchtest.Eventually(tb, func() error {
			if code, _ := moveArea(tb, d.south, "busan", "east"); code != http.StatusOK {
				return fmt.Errorf("move of busan to east: %d", code)
			}
			return nil
		})
	}
	awaitServed(tb, d.north, map[string]string{"jongno": "north", "gangnam": "south", "busan": "east"})
	awaitServed(tb, d.south, map[string]string{"jongno": "north", "gangnam": "south", "busan": "east"})
	return d
}

// The rider client started at a region that is down (east: nobody listens), told of
// the deployment's regions, quotes and requests rides in live regions' areas
// through the others, with the same key, and keeps the ride where it was created.
func TestRiderClientFailsOverFromADeadRegion(t *testing.T) {
	regionSecret(t)
	d := mustRegions(t, "--match-interval", "0")
	east, north, south := "http://"+d.eastAddr, "http://"+d.north.Addr(), "http://"+d.south.Addr()
	c := riderClient(t, d.north, "u-1", dispatch.RoleRider)
	c.BaseURL, c.Regions = east, []string{east, north, south}
	ctx := riderCtx(t)

	for name, p := range map[string]dispatch.Point{"north": atNorth, "south": atSouth} {
		if est, err := c.Estimate(ctx, rider.RideRequest{Pickup: p, Dropoff: atNorth}); err != nil || est.Fare.Amount <= 0 {
			t.Errorf("estimate in %s's area with east dead: %+v %v", name, est, err)
		}
	}
	key := riderclient.NewKey()
	req := rider.RideRequest{Pickup: atSouth, Dropoff: atNorth}
	ride, err := c.RequestRide(ctx, req, key)
	if err != nil {
		t.Fatalf("ride request in south's area with east dead: %v", err)
	}
	if c.RideURL(ride.ID) != south {
		t.Errorf("client keeps ride %s at %s, want south %s", ride.ID, c.RideURL(ride.ID), south)
	}
	at := riderClient(t, d.south, "u-1", dispatch.RoleRider)
	if got, err := at.Ride(ctx, ride.ID); err != nil || got.ID != ride.ID {
		t.Fatalf("south does not have ride %s: %+v %v", ride.ID, got, err)
	}
	if again, err := c.RequestRide(ctx, req, key); err != nil || again.ID != ride.ID {
		t.Errorf("same key again: %+v %v, want ride %s", again, err, ride.ID)
	}
	st, err := c.Follow(ctx, ride.ID, 0)
	if err != nil {
		t.Fatalf("follow: %v", err)
	}
	if r := riderNext(t, st); r.ID != ride.ID || r.Status != dispatch.RideSearching {
		t.Errorf("follow's first event: %+v", r)
	}
	if got, err := c.Cancel(ctx, ride.ID); err != nil || got.Status != dispatch.RideCancelled {
		t.Errorf("cancel: %+v %v", got, err)
	}
	if r := riderNext(t, st); r.Status != dispatch.RideCancelled {
		t.Errorf("follow's next event: %+v, want cancelled", r)
	}
}

// The rider client whose region is killed under it (it learned the regions from it
// on its first call) goes on through the live regions; a ride that only the dead
// region has is not reported unknown.
func TestRiderClientFailsOverWhenItsRegionIsKilled(t *testing.T) {
	regionSecret(t)
	d := mustRegionsEastKillable(t, "--match-interval", "0")
	c := riderClient(t, d.north, "u-1", dispatch.RoleRider)
	c.BaseURL = "http://" + d.east.addr
	ctx := riderCtx(t)
	atEastRide, err := c.RequestRide(ctx, rider.RideRequest{Pickup: atEast, Dropoff: atEast}, "")
	if err != nil {
		t.Fatalf("ride at east while it is up: %v", err)
	}

	d.east.kill()
	for name, p := range map[string]dispatch.Point{"north": atNorth, "south": atSouth} {
		if est, err := c.Estimate(ctx, rider.RideRequest{Pickup: p, Dropoff: atNorth}); err != nil || est.Fare.Amount <= 0 {
			t.Errorf("estimate in %s's area after east was killed: %+v %v", name, est, err)
		}
	}
	ride, err := c.RequestRide(ctx, rider.RideRequest{Pickup: atNorth, Dropoff: atSouth}, "")
	if err != nil {
		t.Fatalf("ride request in north's area after east was killed: %v", err)
	}
	if want := "http://" + d.north.Addr(); c.RideURL(ride.ID) != want {
		t.Errorf("client keeps ride %s at %s, want north %s", ride.ID, c.RideURL(ride.ID), want)
	}
	if got, err := c.Ride(ctx, ride.ID); err != nil || got.ID != ride.ID {
		t.Errorf("ride at north: %+v %v", got, err)
	}
	// Until a region takes east's rides over, nobody has this one; it still exists.
	if _, err := c.Ride(ctx, atEastRide.ID); riderclient.Code(err) == "not_found" {
		t.Errorf("ride %s of the killed region: %v, want it found or east unreachable", atEastRide.ID, err)
	}
}

// nextFrame returns c's next frame, whatever its type.
func nextFrame(tb testing.TB, c *client.Client) driver.Message {
	tb.Helper()
	select {
	case m, ok := <-c.Frames():
		if !ok {
			tb.Fatalf("connection ended: %v", c.Err())
		}
		return m
	case <-time.After(frameWait):
		tb.Fatalf("no frame within %s", frameWait)
	}
	return driver.Message{}
}

// locateInto sends locations at p until one is acked at the region whose socket URL
// is want, following the reconnect frames that send the driver there.
func locateInto(tb testing.TB, c *client.Client, p dispatch.Point, want string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), frameWait)
	defer cancel()
	for i := range 2 * driver.DefaultConfig().BorderLocations {
		ref := fmt.Sprint("into-", i)
		if err := c.Send(ctx, driver.Frame{Type: driver.TypeLocation, Lat: &p.Lat, Lng: &p.Lng, Ref: ref}); err != nil {
			tb.Fatalf("location %s: %v", ref, err)
		}
		for m := nextFrame(tb, c); ; m = nextFrame(tb, c) {
			if m.Type == driver.TypeReconnect {
				drivertest.Next(tb, c, driver.TypeWelcome)
				break
			}
			if m.Type == driver.TypeAck && m.Ref == ref {
				if c.URL() == want {
					return
				}
				break
			}
		}
	}
	tb.Fatalf("client at %s after %d locations, want %s", c.URL(), 2*driver.DefaultConfig().BorderLocations, want)
}

// The driver client dialled at a region that is down (east), told of the
// deployment's regions, is welcomed at a live one, and a driver in south's area ends
// up with south.
func TestDriverClientFailsOverFromADeadRegion(t *testing.T) {
	regionSecret(t)
	d := mustRegions(t, "--match-interval", "0")
	dialer := client.Dialer{Reconnect: true, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		Regions: []string{"http://" + d.eastAddr, "http://" + d.north.Addr(), "http://" + d.south.Addr()}}
	ctx, cancel := context.WithTimeout(context.Background(), frameWait)
	defer cancel()
	c, err := dialer.Dial(ctx, "ws://"+d.eastAddr+driver.Path, mustToken(t, d.north, "d-1", dispatch.RoleDriver))
	if err != nil {
		t.Fatalf("dial with east dead: %v", err)
	}
	defer c.Close()
	if w := drivertest.Next(t, c, driver.TypeWelcome); w.DriverID != "d-1" {
		t.Fatalf("welcome %s", w.Raw)
	}
	if u := c.URL(); u != driverURL(d.north) && u != driverURL(d.south) {
		t.Fatalf("client at %s, want north or south", u)
	}
	locateInto(t, c, atSouth, driverURL(d.south))
}

// The driver client whose region is killed under it (it learned the regions from it
// when it connected) redials, then goes to a live region and is welcomed there.
func TestDriverClientFailsOverWhenItsRegionIsKilled(t *testing.T) {
	regionSecret(t)
	d := mustRegionsEastKillable(t, "--match-interval", "0")
	var drops int
	dialer := client.Dialer{Reconnect: true, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		OnDisconnect: func(error) { drops++ }}
	ctx, cancel := context.WithTimeout(context.Background(), frameWait)
	defer cancel()
	c, err := dialer.Dial(ctx, "ws://"+d.east.addr+driver.Path, mustToken(t, d.north, "d-1", dispatch.RoleDriver))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	drivertest.Next(t, c, driver.TypeWelcome)

	d.east.kill()
	if w := drivertest.Next(t, c, driver.TypeWelcome); w.DriverID != "d-1" {
		t.Fatalf("welcome after east was killed: %s", w.Raw)
	}
	if u := c.URL(); u != driverURL(d.north) && u != driverURL(d.south) {
		t.Fatalf("client at %s after east was killed, want north or south", u)
	}
	if drops != 1 {
		t.Errorf("OnDisconnect called %d times, want once", drops)
	}
	locateInto(t, c, atNorth, driverURL(d.north))
}
