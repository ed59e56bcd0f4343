package client_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/understudy/understudy/driver"
	"github.com/understudy/understudy/driver/client"
	"github.com/understudy/understudy/driver/drivertest"
)

// kill stops the gateway's server listening, as a crash would: dials to it are
// refused from now on. Sockets already open (hijacked) stay; drop them with
// Client.Drop.
func (g *gateway) kill() {
	g.srv.Close()
}

// Two gateways sharing one token secret, as a deployment's regions do.
func mustOpenPair(tb testing.TB) (a, b *gateway) {
	tb.Helper()
	gs := mustOpenRegions(tb, 2)
	return gs[0], gs[1]
}

// mustOpenRegions opens n gateways sharing one token secret.
func mustOpenRegions(tb testing.TB, n int) []*gateway {
	tb.Helper()
	gs := make([]*gateway, n)
	for i := range gs {
		gs[i] = mustOpenGateway(tb)
		gs[i].keys = gs[0].keys
		gs[i].gw.Verifier = gs[0].keys
	}
	return gs
}

// A reconnecting client whose region dies dials the other region it was given and
// is welcomed there.
func TestReconnectFailsOverToAnotherRegion(t *testing.T) {
	a, b := mustOpenPair(t)
	d := client.Dialer{Reconnect: true, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond,
		Regions: []string{a.srv.URL, b.srv.URL}}
	c, err := d.Dial(context.Background(), a.url(), a.token(t, "d-1"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	drivertest.Next(t, c, driver.TypeWelcome)
	a.kill()
	c.Drop()
	if w := drivertest.Next(t, c, driver.TypeWelcome); w.DriverID != "d-1" {
		t.Fatalf("welcome after the failover: %s", w.Raw)
	}
	if c.URL() != b.url() {
		t.Errorf("client is at %s, want the live region %s", c.URL(), b.url())
	}
}

// A region that answers, even with a refusal, is not failed over: the client waits
// for it, as with one region.
func TestRefusedHandshakesDoNotFailOver(t *testing.T) {
	a, b := mustOpenPair(t)
	d := client.Dialer{Reconnect: true, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
		Regions: []string{a.srv.URL, b.srv.URL}}
	c, err := d.Dial(context.Background(), a.url(), a.token(t, "d-1"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	drivertest.Next(t, c, driver.TypeWelcome)
	refused := a.refuse(3*client.FailoverAfter, http.StatusServiceUnavailable)
	c.Drop()
	if w := drivertest.Next(t, c, driver.TypeWelcome); !w.Resumed {
		t.Fatalf("welcome after the refusals: %s, want a resumed one at the same region", w.Raw)
	}
	if c.URL() != a.url() || refused.Load() <= 3*client.FailoverAfter {
		t.Errorf("client at %s after %d handshakes, want %s after the refusals", c.URL(), refused.Load(), a.url())
	}
}

// Dial with Regions: the URL given is dead from the start, so the next region is
// dialled.
func TestDialFailsOverToTheRegionsGiven(t *testing.T) {
	a, b := mustOpenPair(t)
	tok := a.token(t, "d-1")
	a.kill()
	for _, reconnect := range []bool{false, true} {
		d := client.Dialer{Reconnect: reconnect, Regions: []string{a.url(), b.srv.URL}}
		c, err := d.Dial(context.Background(), a.url(), tok)
		if err != nil {
			t.Fatalf("reconnect %v: dial with the first region dead: %v", reconnect, err)
		}
		drivertest.Next(t, c, driver.TypeWelcome)
		if c.URL() != b.url() {
			t.Errorf("reconnect %v: client at %s, want %s", reconnect, c.URL(), b.url())
		}
		_ = c.Close()
	}
	// Without Regions it knows of nowhere else.
	if _, err := client.Dial(context.Background(), a.url(), tok); err == nil {
		t.Errorf("dial of a dead region without Regions succeeded")
	}
}

// The client prefers the regions GET /v1/regions says are up, wherever they are in
// the deployment's order; it learned them from its region when it connected.
func TestFailoverPrefersRegionsThatAreUp(t *testing.T) {
	gs := mustOpenRegions(t, 3)
	home, down, live := gs[0], gs[1], gs[2]
	view := fmt.Sprintf(`{"regions":[{"name":"home","url":%q,"up":true},{"name":"down","url":%q,"up":false},{"name":"live","url":%q,"up":true}],"areas":[]}`,
		home.srv.URL, down.srv.URL, live.srv.URL)
	for _, g := range gs {
		g.regions.Store(&view)
	}
	down.refuse(1<<30, http.StatusServiceUnavailable) // marked down: never welcomes
	d := client.Dialer{Reconnect: true, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond}
	c, err := d.Dial(context.Background(), home.url(), home.token(t, "d-1"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	drivertest.Next(t, c, driver.TypeWelcome)
	home.kill()
	c.Drop()
	drivertest.Next(t, c, driver.TypeWelcome)
	if c.URL() != live.url() {
		t.Errorf("client at %s, want the region marked up %s", c.URL(), live.url())
	}
}
