package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
	"github.com/understudy/understudy/dispatch/jwtauth"
	"github.com/understudy/understudy/dispatch/natslog"
)

// netRegions is a deployment of three region processes, each in a network namespace
// of its own, joined by veth pairs to a bridge in the test's namespace: a real
// network whose links the test can cut (ip link set down) and slow (tc netem).
type netRegions struct {
	*procRegions
	ns     map[string]string // region -> namespace
	link   map[string]string // region -> the host side of its veth pair
	bridge string
}

// ipRun runs ip (or tc) with args, failing tb on error.
func ipRun(tb testing.TB, name string, args ...string) {
	tb.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		tb.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// startNetRegions builds the namespaces and the bridge (unique names and subnet, so
// two suites can run at once) and starts north, east and south in them.
func startNetRegions(tb testing.TB) *netRegions {
	tb.Helper()
	tag := fmt.Sprintf("%04x", rand.N(1<<16))
	subnet := fmt.Sprintf("10.%d.%d", 100+rand.N(100), rand.N(250))
	n := &netRegions{ns: map[string]string{}, link: map[string]string{}, bridge: "ubr" + tag}
	tb.Cleanup(func() { // after the processes, stopped by their own cleanups registered later
		for _, ns := range n.ns {
			_ = exec.Command("ip", "netns", "del", ns).Run()
		}
		_ = exec.Command("ip", "link", "del", n.bridge).Run()
	})
	ipRun(tb, "ip", "link", "add", n.bridge, "type", "bridge")
	ipRun(tb, "ip", "addr", "add", subnet+".254/24", "dev", n.bridge)
	ipRun(tb, "ip", "link", "set", n.bridge, "up")

	names := []string{"north", "east", "south"}
	cells := []string{"8630e1c37ffffff", "8630e1d87ffffff", "8630e1ca7ffffff"}
	var d struct {
		Regions  []dispatch.Region `json:"regions"`
		Areas    []dispatch.Area   `json:"areas"`
		LeaseTTL string            `json:"lease_ttl"`
	}
	d.LeaseTTL = "3s"
	for i, name := range names {
		ns, host, peer := "uns"+tag+name[:1], "uv"+tag+name[:1], "up"+tag+name[:1]
		ip := fmt.Sprintf("%s.%d", subnet, i+1)
		ipRun(tb, "ip", "netns", "add", ns)
		n.ns[name], n.link[name] = ns, host
		ipRun(tb, "ip", "link", "add", host, "type", "veth", "peer", "name", peer)
		ipRun(tb, "ip", "link", "set", peer, "netns", ns)
		ipRun(tb, "ip", "link", "set", host, "master", n.bridge)
		ipRun(tb, "ip", "link", "set", host, "up")
		ipRun(tb, "ip", "netns", "exec", ns, "ip", "addr", "add", ip+"/24", "dev", peer)
		ipRun(tb, "ip", "netns", "exec", ns, "ip", "link", "set", peer, "up")
		ipRun(tb, "ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
		d.Regions = append(d.Regions, dispatch.Region{Name: name, Successor: names[(i+1)%3],
			URL: "http://" + ip + ":9100", NATS: "nats://" + ip + ":4300", NATSCluster: ip + ":6300"})
		d.Areas = append(d.Areas, dispatch.Area{Name: "area-" + name, Region: name, Cells: []string{cells[i]}})
	}
	b, _ := json.MarshalIndent(d, "", "  ")
	dir := tb.TempDir()
	deployment := filepath.Join(dir, "deployment.json")
	if err := os.WriteFile(deployment, b, 0o600); err != nil {
		tb.Fatal(err)
	}

	tb.Setenv("UNDERSTUDY_SECRET", procSecret)
	exe := mustBuild(tb)
	w := &procRegions{tb: tb, dir: dir, deployment: deployment, regions: map[string]devRegion{},
		keys: &jwtauth.Keys{Secret: []byte(procSecret)}, hc: &http.Client{Timeout: 5 * time.Second}}
	tb.Cleanup(w.hc.CloseIdleConnections)
	var wg sync.WaitGroup
	for _, r := range d.Regions {
		cmd := exec.Command("ip", "netns", "exec", n.ns[r.Name], exe, "serve", "--deployment", deployment,
			"--region", r.Name, "--addr", strings.TrimPrefix(r.URL, "http://"), "--data-dir", filepath.Join(dir, r.Name))
		logf, err := os.Create(filepath.Join(dir, r.Name+".log"))
		if err != nil {
			tb.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			tb.Fatal(err)
		}
		wg.Add(1)
		exited := make(chan struct{})
		go func() { defer wg.Done(); _ = cmd.Wait(); logf.Close(); close(exited) }()
		tb.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-exited
		})
		w.regions[r.Name] = devRegion{url: r.URL, nats: r.NATS, pid: cmd.Process.Pid}
	}
	n.procRegions = w
	for _, name := range names {
		for _, at := range names {
			w.awaitServing(at, "area-"+name, name)
		}
	}
	return n
}

// inside asks region's own /v1/regions from inside its namespace (the test's path to
// it may be cut) and returns who it says serves area.
func (n *netRegions) inside(tb testing.TB, region, area string) (string, error) {
	tb.Helper()
	out, err := exec.Command("ip", "netns", "exec", n.ns[region], "curl", "-s", "-m", "3", n.regions[region].url+"/v1/regions").Output()
	if err != nil {
		return "", fmt.Errorf("curl inside %s: %v", region, err)
	}
	var v dispatch.RegionsView
	if err := json.Unmarshal(out, &v); err != nil {
		return "", fmt.Errorf("%s's /v1/regions: %v in %s", region, err, out)
	}
	for _, a := range v.Areas {
		if a.Name == area {
			if a.ServedBy == nil {
				return "", nil
			}
			return *a.ServedBy, nil
		}
	}
	return "", fmt.Errorf("no area %s", area)
}

// North is cut off from the other regions (its link down: its NATS node, and every
// client's path to it) while it runs, then the link is healed. During the cut north
// stops serving its area (its lease runs out on its own clock, and it cannot renew
// without a quorum) and east, on the majority side, takes the area over. After the
// heal north rejoins and serves nothing it was not given, and the area's whole log
// shows no ride or driver held twice.
func TestPartitionedRegionStopsAndRejoins(t *testing.T) {
	n := startNetRegions(t)
	// A ride in flight at north when the link goes.
	d1 := n.online("north", "d-1", n.center("north", 0))
	r1 := n.request("north", n.center("north", 50))
	accept(t, d1, r1)
	_ = d1.Close()

	ipRun(t, "ip", "link", "set", n.link["north"], "down")
	cut := time.Now()
	epoch := n.awaitServing("east", "area-north", "east")
	t.Logf("east serves area-north %s after north was cut off (epoch %d)", time.Since(cut).Round(time.Millisecond), epoch)
	dispatchtest.Eventually(t, func() error {
		by, err := n.inside(t, "north", "area-north")
		if err != nil {
			return err
		}
		if by == "north" {
			return fmt.Errorf("north, cut off, still says it serves area-north")
		}
		return nil
	})
	// The ride goes on at east, once the ledger has a leader on the majority side.
	n.awaitLeader("east", natslog.LedgerStream, "north")
	c, welcome := n.dial("east", "d-1")
	if welcome.Ride == nil || welcome.Ride.ID != r1 || welcome.Ride.Status != dispatch.RideMatched {
		t.Fatalf("d-1 at east: %s, want ride %s matched", welcome.Raw, r1)
	}
	steps(t, c, r1, "arrived", "start", "complete")

	ipRun(t, "ip", "link", "set", n.link["north"], "up")
	dispatchtest.Eventually(t, func() error {
		by, err := n.inside(t, "north", "area-north")
		if err != nil {
			return err
		}
		if by != "east" {
			return fmt.Errorf("north, healed, says area-north is served by %q, want east", by)
		}
		return nil
	})
	// The healed node's rejoin can cost the cluster an election (its Raft term ran
	// ahead while it was alone): a few seconds in which east too holds no valid lease.
	// East, the last holder, then has the area again; north never does.
	dispatchtest.Eventually(t, func() error {
		if by, _, err := n.served("east", "area-north"); err != nil || by != "east" {
			return fmt.Errorf("after the heal east says area-north is served by %q (%v), want east", by, err)
		}
		if code, r := n.ride("east", r1); code != 200 || r.Status != dispatch.RideCompleted {
			return fmt.Errorf("ride %s at east: %d %s, want completed", r1, code, r.Status)
		}
		return nil
	})
	if by, err := n.inside(t, "north", "area-north"); err != nil || by == "north" {
		t.Errorf("north, healed, says area-north is served by %q (%v)", by, err)
	}
	checkHistory(t, n.history("east", "area-north"))
}
