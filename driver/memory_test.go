//go:build unix

package driver_test

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
	"github.com/understudy/understudy/dispatch/jwtauth"
	"github.com/understudy/understudy/driver"
	"github.com/understudy/understudy/driver/client"
)

// The idle-driver measurement runs the drivers' side in a child process (this test
// binary again, told so by helperEnv), so the server process's memory is the gateway's
// alone.
const (
	helperEnv = "UNDERSTUDY_IDLE_DRIVERS_URL"
	helperN   = "UNDERSTUDY_IDLE_DRIVERS_N"
	helperKey = "UNDERSTUDY_IDLE_DRIVERS_SECRET"
)

// memoryBudget is the target for one idle connected driver, server side.
const memoryBudget = 16 << 10

var idleDrivers = flag.Int("idle-drivers", 10000, "drivers BenchmarkIdleDriverMemory connects (capped by RLIMIT_NOFILE)")

func init() {
	if url := os.Getenv(helperEnv); url != "" {
		os.Exit(idleDriversMain(url))
	}
}

// idleDriversMain connects N drivers, says "ready", and holds them until stdin closes.
func idleDriversMain(url string) int {
	n, _ := strconv.Atoi(os.Getenv(helperN))
	keys := &jwtauth.Keys{Secret: []byte(os.Getenv(helperKey))}
	conns := make([]*websocket.Conn, n)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	work := make(chan int)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := websocket.Dialer{HandshakeTimeout: 30 * time.Second, ReadBufferSize: 256, WriteBufferSize: 256}
			for i := range work {
				tok, _ := keys.Sign(dispatch.Identity{Subject: idleID(i), Role: dispatch.RoleDriver}, time.Hour)
				ws, _, err := d.Dial(url, http.Header{"Authorization": {"Bearer " + tok}})
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("driver %d: %w", i, err))
					mu.Unlock()
					continue
				}
				conns[i] = ws
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	if len(errs) > 0 {
		fmt.Fprintf(os.Stderr, "%d of %d drivers failed to connect; first: %v\n", len(errs), n, errs[0])
		return 1
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, ws := range conns {
		_ = ws.Close()
	}
	return 0
}

func idleID(i int) string { return "idle-" + strconv.Itoa(i) }

// maxDrivers caps n so both processes stay within their open-file limit (Go raises the
// soft limit to the hard one at start-up).
func maxDrivers(n int) int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Max < uint64(n)+256 {
		return int(lim.Max) - 256
	}
	return n
}

// idleMemory is what one idle driver costs the server process.
type idleMemory struct {
	drivers    int
	heapStack  float64 // HeapInuse+StackInuse per driver, bytes
	rss        float64 // resident set size per driver, bytes (0 if unknown)
	goroutines float64 // per driver
}

// measureIdle connects n drivers from a child process to a gateway in this process and
// returns the growth of this process's memory per driver, after garbage collection,
// once every driver has been welcomed. The drivers are registered in the store first,
// so the figure is the gateway's (socket, buffers, goroutines, session), not the
// store's record.
func measureIdle(tb testing.TB, n int) idleMemory {
	tb.Helper()
	reg := prometheus.NewRegistry()
	r := mustOpenRegion(tb, func(g *driver.Gateway) {
		g.Metrics = driver.NewMetrics(reg)
		g.Config.ReadTimeout = 10 * time.Minute // the child never answers pings
		g.Config.PingInterval = 5 * time.Minute
	})
	for i := range n {
		if _, err := r.engine.Drivers().Connect(context.Background(), idleID(i)); err != nil {
			tb.Fatal(err)
		}
	}
	// Warm up: one driver connects and leaves, so pools and one-off state exist.
	warm, _ := r.dial(tb, "warm-up", client.Dialer{})
	_ = warm.Close()
	dispatchtest.Eventually(tb, connected(r.gw, 0))

	before := sample()
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), helperEnv+"="+r.url(), helperN+"="+strconv.Itoa(n), helperKey+"="+string(r.keys.Secret))
	stdin, _ := child.StdinPipe()
	stdout, _ := child.StdoutPipe()
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		tb.Fatal(err)
	}
	defer func() {
		_ = stdin.Close()
		_ = child.Wait()
		dispatchtest.Eventually(tb, connected(r.gw, 0))
	}()
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && line != "ready\n" {
			err = fmt.Errorf("child said %q", line)
		}
		ready <- err
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case err := <-ready:
		if err != nil {
			tb.Fatalf("idle drivers: %v", err)
		}
	case <-time.After(2 * time.Minute):
		tb.Fatal("idle drivers did not connect within 2 minutes")
	}
	dispatchtest.Eventually(tb, func() error {
		if w, c := welcomed(tb, reg)-1, r.gw.Connected(); w < float64(n) || c != n {
			return fmt.Errorf("%d of %d connected, %v welcomed", c, n, w)
		}
		return nil
	})
	after := sample()
	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(n) }
	m := idleMemory{
		drivers:    n,
		heapStack:  per(after.heapStack, before.heapStack),
		goroutines: per(after.goroutines, before.goroutines),
	}
	if before.rss > 0 && after.rss > 0 {
		m.rss = per(after.rss, before.rss)
	}
	return m
}

type memSample struct{ heapStack, rss, goroutines uint64 }

// sample collects garbage until idle goroutine stacks have shrunk, then reads memory.
func sample() memSample {
	for range 4 {
		runtime.GC()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSample{heapStack: ms.HeapInuse + ms.StackInuse, rss: rss(), goroutines: uint64(runtime.NumGoroutine())}
}

// rss is the process's resident set size from /proc (Linux); 0 elsewhere.
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize())
}

func welcomed(tb testing.TB, reg *prometheus.Registry) float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "understudy_driver_frames_out_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "type" && l.GetValue() == driver.TypeWelcome {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func (m idleMemory) String() string {
	return fmt.Sprintf("%d idle drivers: %.0f B heap+stack, %.0f B RSS, %.2f goroutines per driver",
		m.drivers, m.heapStack, m.rss, m.goroutines)
}

// TestIdleDriverMemory measures 500 idle drivers on every test run (10,000 in
// BenchmarkIdleDriverMemory) and holds them to the budget; the race detector's larger
// stacks get twice as much.
func TestIdleDriverMemory(t *testing.T) {
	m := measureIdle(t, 500)
	t.Log(m)
	limit := float64(memoryBudget)
	if raceEnabled {
		limit *= 2
	}
	if m.heapStack > limit || m.goroutines > 2.05 {
		t.Fatalf("%v: over %.0f B or 2 goroutines per driver", m, limit)
	}
}

var (
	benchOnce sync.Once
	benchMem  idleMemory
)

// BenchmarkIdleDriverMemory connects -idle-drivers drivers (default 10,000, fewer if
// the open-file limit is lower) and reports the server's memory per idle driver. The
// measurement runs once however large b.N grows.
//
//	go test -run '^$' -bench IdleDriverMemory -benchtime 1x ./driver/
func BenchmarkIdleDriverMemory(b *testing.B) {
	benchOnce.Do(func() {
		n := maxDrivers(*idleDrivers)
		if n < *idleDrivers {
			b.Logf("open-file limit allows %d drivers, not %d: raise it with ulimit -n", n, *idleDrivers)
		}
		benchMem = measureIdle(b, n)
		b.Log(benchMem)
	})
	for b.Loop() {
	}
	b.ReportMetric(float64(benchMem.drivers), "drivers")
	b.ReportMetric(benchMem.heapStack, "heap+stack-B/driver")
	b.ReportMetric(benchMem.rss, "rss-B/driver")
	b.ReportMetric(benchMem.goroutines, "goroutines/driver")
	if !raceEnabled && benchMem.heapStack > memoryBudget {
		b.Errorf("%v: over the %d B budget", benchMem, memoryBudget)
	}
}
