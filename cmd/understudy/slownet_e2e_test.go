package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/natslog"
	"github.com/understudy/understudy/driver"
	"github.com/understudy/understudy/driver/drivertest"
	"github.com/understudy/understudy/rider"
	riderclient "github.com/understudy/understudy/rider/client"
)

// slowNet is a deployment of three regions (in this process) on a three-node NATS
// cluster whose nodes reach one another only through a TCP proxy (toxiproxy) in
// front of each node's route port: every node advertises its proxy, not its port,
// so every byte that crosses from one region to another crosses one proxy, where a
// latency toxic delays it. Each region talks to its own node directly, as a
// region's processes do on their own network.
type slowNet struct {
	names   []string
	regions map[string]*server
	proxies []*toxiproxy.Proxy
}

// homes is where the areas of writeDeployment's file are served when all is well.
var slowNetHomes = map[string]string{"jongno": "north", "busan": "east", "gangnam": "south"}

func startSlowNet(tb testing.TB, args ...string) *slowNet {
	tb.Helper()
	n := &slowNet{names: []string{"north", "east", "south"}, regions: map[string]*server{}}
	api := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	var routes, clients []string
	for _, name := range n.names {
		route := freeAddr(tb)
		p := toxiproxy.NewProxy(api, name, "127.0.0.1:0", route)
		if err := p.Start(); err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(p.Stop)
		n.proxies = append(n.proxies, p)
		routes, clients = append(routes, route), append(clients, freeAddr(tb))
	}
	for i, name := range n.names {
		var peers []string
		for j, p := range n.proxies {
			if j != i {
				peers = append(peers, p.Listen)
			}
		}
		emb, err := natslog.StartNode(natslog.Node{Region: name, Client: clients[i], Route: routes[i],
			Advertise: n.proxies[i].Listen, Peers: peers, DataDir: tb.TempDir()})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(emb.Close) // after the regions, which are stopped first
	}
	// After the regions stop and before the nodes do, so that no toxic is left
	// holding bytes for a connection that closed.
	tb.Cleanup(func() {
		for _, p := range n.proxies {
			p.Toxics.ResetToxics(context.Background())
		}
	})
	addrs := map[string]string{}
	for _, name := range n.names {
		addrs[name] = freeAddr(tb)
	}
	file := writeDeployment(tb, addrs["north"], addrs["east"], addrs["south"])
	for i, name := range n.names {
		urls := []string{"nats://" + clients[i]} // its own node first
		for j, c := range clients {
			if j != i {
				urls = append(urls, "nats://"+c)
			}
		}
		n.regions[name] = serveRegion(tb, name, addrs[name], []string{"--deployment", file, "--nats", strings.Join(urls, ",")}, args)
	}
	for _, s := range n.regions {
		awaitServed(tb, s, slowNetHomes)
	}
	return n
}

// delay sets the latency every byte between two regions' nodes gets, in each
// direction, with jitter (uniform, ±).
func (n *slowNet) delay(tb testing.TB, latency, jitter time.Duration) {
	tb.Helper()
	for _, p := range n.proxies {
		for _, stream := range []string{"upstream", "downstream"} {
			name := "latency_" + stream
			if p.Toxics.GetToxic(name) != nil {
				if err := p.Toxics.RemoveToxic(context.Background(), name); err != nil {
					tb.Fatal(err)
				}
			}
			if latency == 0 {
				continue
			}
			body := fmt.Sprintf(`{"name":%q,"type":"latency","stream":%q,"attributes":{"latency":%d,"jitter":%d}}`,
				name, stream, latency.Milliseconds(), jitter.Milliseconds())
			if _, err := p.Toxics.AddToxicJson(strings.NewReader(body)); err != nil {
				tb.Fatal(err)
			}
		}
	}
}

// leaseView is who serves each area under which epoch, as each region sees it.
func (n *slowNet) leaseView() map[string]string {
	v := map[string]string{}
	for _, at := range n.names {
		for area := range slowNetHomes {
			by, epoch, _ := n.regions[at].leases.ServedBy(area)
			v[at+" sees "+area] = fmt.Sprintf("%s@%d", by, epoch)
		}
	}
	return v
}

// A deployment whose regions are 100 ms apart (each way, ±20 ms: 200 ms round trips
// between NATS nodes) keeps its leases: for 15 s nobody sees any area change hands
// or epoch, and no region takes a lease over. Rides go on meanwhile: a driver at
// north takes three trips to completion, each written to the replicated ride log and
// ledger across the slow links.
func TestSlowNetworkKeepsLeases(t *testing.T) {
	regionSecret(t)
	n := startSlowNet(t)
	n.delay(t, 100*time.Millisecond, 20*time.Millisecond)
	takeovers := map[string]float64{}
	for _, at := range n.names {
		takeovers[at] = metricOf(t, n.regions[at], "understudy_lease_takeovers_total")
	}
	before := n.leaseView()

	north := n.regions["north"]
	d := mustOnline(t, north, "d-1", atNorth)
	rc := riderClient(t, north, "u-1", dispatch.RoleRider)
	var waits []time.Duration
	var flaps []string
	deadline := time.Now().Add(15 * time.Second)
	for trip := 0; time.Now().Before(deadline) || trip < 3; trip++ {
		if trip < 3 {
			sent := time.Now()
			ride, err := rc.RequestRide(riderCtx(t), rider.RideRequest{Pickup: atNorth, Dropoff: atSouth}, riderclient.NewKey())
			if err != nil {
				t.Fatalf("ride request at north across the slow network: %v", err)
			}
			o := drivertest.Next(t, d, driver.TypeOffer)
			waits = append(waits, time.Since(sent))
			if o.RideID != ride.ID {
				t.Fatalf("offered %s, want %s", o.RideID, ride.ID)
			}
			send(t, d.Accept(ctx(t), o.OfferID))
			drivertest.Next(t, d, driver.TypeAssigned)
			steps(t, d, ride.ID, "arrived", "start", "complete")
		} else {
			time.Sleep(100 * time.Millisecond) // the watch below is the point now
		}
		if now := n.leaseView(); !maps.Equal(now, before) {
			flaps = append(flaps, fmt.Sprintf("%v", diffView(before, now)))
			before = now
		}
	}
	if len(flaps) > 0 {
		t.Errorf("leases changed hands or epochs at 100 ms between regions: %s", strings.Join(flaps, "; "))
	}
	for _, at := range n.names {
		if got := metricOf(t, n.regions[at], "understudy_lease_takeovers_total"); got != takeovers[at] {
			t.Errorf("%s took %v leases over at 100 ms between regions, want none", at, got-takeovers[at])
		}
	}
	slices.Sort(waits)
	t.Logf("request to offer at north, 100±20 ms between regions: %v", waits)
}

// metricOf reads an unlabelled series from s's /metrics, 0 when absent.
func metricOf(tb testing.TB, s *server, series string) float64 {
	tb.Helper()
	_, body := get(tb, "http://"+s.Addr()+"/metrics")
	v, _ := sample(body, series)
	return v
}

func diffView(was, now map[string]string) []string {
	var d []string
	for k, v := range now {
		if was[k] != v {
			d = append(d, k+": "+was[k]+" -> "+v)
		}
	}
	slices.Sort(d)
	return d
}

// BenchmarkRequestToOfferAcrossRegions times a ride request at north (the rider API's
// 201 included) to its offer on the driver's socket, in a deployment whose regions'
// NATS nodes are a given latency apart (each way): the ride log, the idempotency
// keys and the ledger are replicated across those links. Each ride is cancelled
// after its offer, which frees the driver for the next.
func BenchmarkRequestToOfferAcrossRegions(b *testing.B) {
	for _, between := range []time.Duration{0, 100 * time.Millisecond} {
		b.Run(fmt.Sprintf("between=%s", between), func(b *testing.B) {
			b.Setenv("UNDERSTUDY_SECRET", "a-secret-all-regions-share")
			n := startSlowNet(b)
			n.delay(b, between, between/5)
			north := n.regions["north"]
			d := mustOnline(b, north, "d-1", atNorth)
			rc := riderClient(b, north, "u-1", dispatch.RoleRider)
			waits := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				sent := time.Now()
				ride, err := rc.RequestRide(riderCtx(b), rider.RideRequest{Pickup: atNorth, Dropoff: atSouth}, riderclient.NewKey())
				if err != nil {
					b.Fatal(err)
				}
				if o := drivertest.Next(b, d, driver.TypeOffer); o.RideID != ride.ID {
					b.Fatalf("offered %s, want %s", o.RideID, ride.ID)
				}
				waits = append(waits, time.Since(sent))
				if _, err := rc.Cancel(riderCtx(b), ride.ID); err != nil {
					b.Fatal(err)
				}
				drivertest.Next(b, d, driver.TypeOfferRevoked)
			}
			b.StopTimer()
			slices.Sort(waits)
			pct := func(p float64) float64 { return float64(waits[int(p*float64(len(waits)-1))].Microseconds()) / 1000 }
			b.ReportMetric(pct(0.5), "p50-ms")
			b.ReportMetric(pct(0.99), "p99-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}
