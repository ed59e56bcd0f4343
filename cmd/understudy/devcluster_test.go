package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
	"github.com/understudy/understudy/dispatch/natslog"
)

// lowPort returns a free TCP port below Linux's ephemeral range (32768 and up), so no
// outgoing connection takes it before the region binds it, and not in taken.
func lowPort(tb testing.TB, taken map[int]bool) int {
	tb.Helper()
	for range 1000 {
		port := 20000 + rand.N(12000)
		if taken[port] {
			continue
		}
		if ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			ln.Close()
			taken[port] = true
			return port
		}
	}
	tb.Fatal("no free port in 20000-31999")
	return 0
}

// testDeployment writes a deployment file like the contract's example, on free
// loopback ports, and returns its path.
func testDeployment(tb testing.TB) string {
	tb.Helper()
	var d struct {
		Regions []dispatch.Region `json:"regions"`
		Areas   []dispatch.Area   `json:"areas"`
	}
	taken := map[int]bool{}
	names := []string{"north", "east", "south"}
	cells := []string{"8630e1c37ffffff", "8630e1d87ffffff", "8630e1ca7ffffff"}
	for i, name := range names {
		d.Regions = append(d.Regions, dispatch.Region{Name: name, Successor: names[(i+1)%3],
			URL:         fmt.Sprintf("http://127.0.0.1:%d", lowPort(tb, taken)),
			NATS:        fmt.Sprintf("nats://127.0.0.1:%d", lowPort(tb, taken)),
			NATSCluster: fmt.Sprintf("127.0.0.1:%d", lowPort(tb, taken))})
		d.Areas = append(d.Areas, dispatch.Area{Name: "area-" + name, Region: name, Cells: []string{cells[i]}})
	}
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(tb.TempDir(), "deployment.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// devClusterProc is a running `understudy dev-cluster` and what it printed.
type devClusterProc struct {
	cmd     *exec.Cmd
	exited  chan struct{}
	err     error // once exited
	mu      sync.Mutex
	out     []string
	regions map[string]devRegion
}

type devRegion struct {
	url, nats string
	pid       int
}

// startDevCluster runs `understudy dev-cluster` with args and waits until it says
// every region is ready. At cleanup it stops it and kills any region left.
func startDevCluster(tb testing.TB, args ...string) *devClusterProc {
	tb.Helper()
	p := &devClusterProc{cmd: exec.Command(mustBuild(tb), append([]string{"dev-cluster"}, args...)...),
		exited: make(chan struct{}), regions: map[string]devRegion{}}
	// Output goes through a writer, not StdoutPipe: Wait then returns only once every
	// line is read (with a pipe, Wait may close it before the last lines are).
	ready := make(chan struct{})
	p.cmd.Stdout = &lineWriter{line: func(line string) {
		p.mu.Lock()
		p.out = append(p.out, line)
		// region NAME URL pid PID nats NATS log FILE
		if f := strings.Fields(line); len(f) >= 7 && f[0] == "region" && f[3] == "pid" && f[5] == "nats" {
			pid, _ := strconv.Atoi(f[4])
			p.regions[f[1]] = devRegion{url: f[2], pid: pid, nats: f[6]}
		}
		p.mu.Unlock()
		if strings.HasPrefix(line, "ready:") {
			close(ready)
		}
	}}
	p.cmd.Stderr = p.cmd.Stdout
	if err := p.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	tb.Cleanup(func() {
		p.stop(tb)
		for _, r := range p.regionsNow() {
			_ = syscall.Kill(r.pid, syscall.SIGKILL) // gone already unless a test failed midway
		}
	})
	select {
	case <-ready:
		return p
	case <-p.exited:
		tb.Fatalf("dev-cluster exited before its regions were ready (%v):\n%s", p.err, p.output())
	case <-time.After(2 * dispatchtest.Patience):
		tb.Fatalf("dev-cluster's regions not ready within %s:\n%s", 2*dispatchtest.Patience, p.output())
	}
	return nil
}

func (p *devClusterProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.out, "\n")
}

func (p *devClusterProc) regionsNow() map[string]devRegion {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.regions)
}

// stop sends dev-cluster SIGINT, as Ctrl-C would, and waits for it to exit.
func (p *devClusterProc) stop(tb testing.TB) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.exited:
	case <-time.After(dispatchtest.Patience):
		_ = p.cmd.Process.Kill()
		<-p.exited
		tb.Errorf("dev-cluster did not stop within %s of SIGINT:\n%s", dispatchtest.Patience, p.output())
	}
}

// TestDevClusterThreeRegionsOneNATSCluster: `understudy dev-cluster` starts three
// regions, each its own process with its own NATS node; all become ready, their
// nodes form one cluster, and the ride log has a replica in each region. A ride
// change acknowledged by the stream leader's region survives kill -9 of that
// region's process (and its node with it): another region's node reads it back.
// Then SIGINT stops dev-cluster and the regions left, cleanly.
func TestDevClusterThreeRegionsOneNATSCluster(t *testing.T) {
	p := startDevCluster(t, "--deployment", testDeployment(t), "--dir", t.TempDir())
	regions := p.regionsNow()
	if len(regions) != 3 {
		t.Fatalf("dev-cluster printed %d regions, want 3:\n%s", len(regions), p.output())
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	defer hc.CloseIdleConnections()
	readyOK := func(url string) error {
		resp, err := hc.Get(url + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s/readyz = %d", url, resp.StatusCode)
		}
		return nil
	}
	for name, r := range regions {
		if err := readyOK(r.url); err != nil {
			t.Fatalf("region %s: %v", name, err)
		}
	}

	// One cluster: the ride log has its leader and two current replicas, one per region.
	connect := func(r devRegion) *nats.Conn {
		nc, err := natslog.Connect(r.nats, nats.MaxReconnects(0))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	var leader string
	js, _ := jetstream.New(connect(regions["north"]))
	dispatchtest.Eventually(t, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := js.Stream(ctx, natslog.RideStream)
		if err != nil {
			return err
		}
		c := st.CachedInfo().Cluster
		if c == nil || c.Leader == "" {
			return errors.New("ride log without a leader")
		}
		peers := []string{c.Leader}
		for _, r := range c.Replicas {
			if r.Current {
				peers = append(peers, r.Name)
			}
		}
		if slices.Sort(peers); !slices.Equal(peers, []string{"east", "north", "south"}) {
			return fmt.Errorf("ride log on %v (leader %s), want one current replica in each region", peers, c.Leader)
		}
		leader = c.Leader
		return nil
	})

	// A ride change acknowledged through the leader's own node.
	ride := dispatch.Ride{ID: "r_survivor", Status: dispatch.RideSearching, Version: 1}
	body, _ := json.Marshal(ride)
	subj := "understudy.rides." + leader + "." + ride.ID
	js, _ = jetstream.New(connect(regions[leader]))
	ctx, cancel := context.WithTimeout(context.Background(), dispatchtest.Patience)
	defer cancel()
	if _, err := js.Publish(ctx, subj, body); err != nil {
		t.Fatalf("publish through %s's node: %v", leader, err)
	}

	if err := syscall.Kill(regions[leader].pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	dispatchtest.Eventually(t, func() error {
		if !strings.Contains(p.output(), fmt.Sprintf("region %s (pid %d) exited", leader, regions[leader].pid)) {
			return fmt.Errorf("dev-cluster has not reported %s's exit", leader)
		}
		return nil
	})
	var other string
	for name := range regions {
		if name != leader {
			other = name
			break
		}
	}
	js, _ = jetstream.New(connect(regions[other]))
	dispatchtest.Eventually(t, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := js.Stream(ctx, natslog.RideStream)
		if err != nil {
			return fmt.Errorf("ride log through %s's node: %w", other, err)
		}
		msg, err := st.GetLastMsgForSubject(ctx, subj)
		if err != nil {
			return fmt.Errorf("read %s back through %s's node: %w", subj, other, err)
		}
		if string(msg.Data) != string(body) {
			return fmt.Errorf("read back %s, want %s", msg.Data, body)
		}
		return nil
	})
	for name, r := range regions {
		if name != leader {
			dispatchtest.Eventually(t, func() error { return readyOK(r.url) })
		}
	}

	p.stop(t)
	if p.err != nil {
		t.Fatalf("dev-cluster exited with %v after SIGINT:\n%s", p.err, p.output())
	}
	for name, r := range regions {
		if name != leader && !strings.Contains(p.output(), fmt.Sprintf("region %s (pid %d) stopped: exit 0", name, r.pid)) {
			t.Errorf("region %s did not stop cleanly:\n%s", name, p.output())
		}
	}
}

// lineWriter hands each complete line written to it to line (exec writes from one
// goroutine at a time for a Stdout that is also the Stderr).
type lineWriter struct {
	partial []byte
	line    func(string)
}

func (w *lineWriter) Write(b []byte) (int, error) {
	w.partial = append(w.partial, b...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			return len(b), nil
		}
		w.line(string(w.partial[:i]))
		w.partial = w.partial[i+1:]
	}
}
