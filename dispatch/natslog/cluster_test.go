package natslog_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
	"github.com/understudy/understudy/dispatch/natslog"
)

// routePort returns a free TCP port below Linux's ephemeral range (32768 and up),
// so that no outgoing connection takes it between now and the node's bind.
func routePort(tb testing.TB) int {
	tb.Helper()
	for range 1000 {
		port := 20000 + rand.N(12000)
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			ln.Close()
			return port
		}
	}
	tb.Fatal("no free port in 20000-31999")
	return 0
}

// startCluster starts one node per region, in process, clustered together, and
// waits until each sees a meta leader.
func startCluster(tb testing.TB, regions ...string) []*natslog.Embedded {
	tb.Helper()
	nodes := make([]natslog.Node, len(regions))
	for i, r := range regions {
		nodes[i] = natslog.Node{Region: r, DataDir: tb.TempDir(),
			Client: fmt.Sprintf("127.0.0.1:%d", routePort(tb)), Route: fmt.Sprintf("127.0.0.1:%d", routePort(tb))}
	}
	var started []*natslog.Embedded
	for i := range nodes {
		for j, p := range nodes {
			if j != i {
				nodes[i].Peers = append(nodes[i].Peers, p.Route)
			}
		}
		e, err := natslog.StartNode(nodes[i])
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(e.Close)
		started = append(started, e)
	}
	ctx, cancel := context.WithTimeout(context.Background(), dispatchtest.Patience)
	defer cancel()
	for _, e := range started {
		if err := e.AwaitMetaLeader(ctx, slog.New(slog.DiscardHandler)); err != nil {
			tb.Fatal(err)
		}
	}
	return started
}

// TestNodesFormOneClusterAndPlaceReplicasInDistinctRegions: three regions' nodes form
// one JetStream cluster; the three regions, starting at once, each open the ride
// log, the ledger and the idempotency bucket with 3 replicas through their own node,
// and each stream has one replica in every region.
func TestNodesFormOneClusterAndPlaceReplicasInDistinctRegions(t *testing.T) {
	nodes := startCluster(t, "north", "east", "south")
	ctx, cancel := context.WithTimeout(context.Background(), dispatchtest.Patience)
	defer cancel()
	var g errgroup.Group
	var conns []*nats.Conn
	for i, n := range nodes {
		urls := []string{n.URL()}
		for j, o := range nodes {
			if j != i {
				urls = append(urls, o.URL())
			}
		}
		nc, err := natslog.Connect(strings.Join(urls, ","), natslog.ClusterOptions()...)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		conns = append(conns, nc)
		g.Go(func() error {
			// Until the meta leader has heard from every node, placement of an R3
			// stream fails ("no suitable peers"), and a create racing the other
			// regions' may go unanswered: retry, as serve does (awaitStreams).
			return dispatchtest.Within(dispatchtest.Patience, 100*time.Millisecond, func() error {
				octx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				return openAll(octx, nc, n.Name())
			})
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	nc := conns[0]
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{natslog.RideStream, natslog.LedgerStream, "KV_" + natslog.IdempotencyBucket} {
		dispatchtest.Eventually(t, func() error {
			st, err := js.Stream(ctx, name)
			if err != nil {
				return err
			}
			info := st.CachedInfo()
			if info.Cluster == nil || info.Cluster.Leader == "" {
				return fmt.Errorf("stream %s: no leader yet", name)
			}
			peers := []string{info.Cluster.Leader}
			for _, p := range info.Cluster.Replicas {
				if p.Current {
					peers = append(peers, p.Name)
				}
			}
			slices.Sort(peers)
			if want := []string{"east", "north", "south"}; !slices.Equal(peers, want) {
				return fmt.Errorf("stream %s on %v (current), want one replica in each of %v", name, peers, want)
			}
			return nil
		})
	}
}

// openAll opens region's ride log, the ledger and the idempotency bucket, 3 replicas each.
func openAll(ctx context.Context, nc *nats.Conn, region string) error {
	if _, err := natslog.OpenRideLog(ctx, nc, region, 3); err != nil {
		return fmt.Errorf("%s: %w", region, err)
	}
	if _, err := natslog.OpenLedger(ctx, nc, 3); err != nil {
		return fmt.Errorf("%s: %w", region, err)
	}
	if _, err := natslog.OpenIdempotencyStore(ctx, nc, region, time.Hour, 3); err != nil {
		return fmt.Errorf("%s: %w", region, err)
	}
	return nil
}

// staticFence is the fence a region holds: the one it wrote.
type staticFence map[string]uint64

func (f staticFence) Fence(area string) (uint64, bool) { seq, ok := f[area]; return seq, ok }

// Many rides of one area appended at once on a replicated log all land: the servers
// refuse a second message checking the same fence while one is in flight ("wrong
// last sequence" without a sequence), which is no fence moving on. A fence that did
// move on still refuses.
func TestConcurrentAppendsInOneAreaAreNotFenced(t *testing.T) {
	nodes := startCluster(t, "north", "east", "south")
	ctx, cancel := context.WithTimeout(context.Background(), dispatchtest.Patience)
	defer cancel()
	nc, err := nats.Connect(nodes[0].URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var l *natslog.RideLog
	// Until the meta leader has heard from every node, placement of an R3 stream
	// fails: retry, as serve does.
	if err := dispatchtest.Within(dispatchtest.Patience, 100*time.Millisecond, func() error {
		octx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		var err error
		l, err = natslog.OpenRideLog(octx, nc, "north", 3)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	seq, err := l.WriteFence(ctx, "gangbuk", "north", 1)
	if err != nil {
		t.Fatal(err)
	}
	l.Fences = staticFence{"gangbuk": seq}
	var g errgroup.Group
	for i := range 64 {
		g.Go(func() error {
			r := dispatch.Ride{ID: fmt.Sprintf("r_%d", i), Area: "gangbuk", Status: dispatch.RideSearching, Version: 1}
			return l.Append(ctx, []dispatch.Ride{r})
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("concurrent appends in one area: %v", err)
	}
	if _, err := l.WriteFence(ctx, "gangbuk", "east", 2); err != nil {
		t.Fatal(err)
	}
	err = l.Append(ctx, []dispatch.Ride{{ID: "r_late", Area: "gangbuk", Status: dispatch.RideSearching, Version: 1}})
	if !errors.Is(err, dispatch.ErrFenced) {
		t.Fatalf("append under the old fence after another region wrote its own: %v, want ErrFenced", err)
	}
}
