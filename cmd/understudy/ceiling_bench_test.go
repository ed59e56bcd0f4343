package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
	"github.com/understudy/understudy/driver"
)

// The knobs of the two benchmarks below: make test runs each once with their short
// defaults (under 20 s each); a longer or larger run sets them in the environment, e.g.
//
//	UNDERSTUDY_CEILING_WINDOW=30s UNDERSTUDY_CEILING_CONNS=500 go test ./cmd/understudy -run '^$' -bench IngestVsBareReadLoop -benchtime 1x
const (
	envCeilingConns  = "UNDERSTUDY_CEILING_CONNS"   // sockets feeding each server in BenchmarkIngestVsBareReadLoop
	envCeilingWindow = "UNDERSTUDY_CEILING_WINDOW"  // the measured window of each phase, and of BenchmarkSocketToQueryable
	envQueryableLoad = "UNDERSTUDY_QUERYABLE_CONNS" // background drivers in BenchmarkSocketToQueryable, at 10 updates/s each
)

// unlimitedFrames lifts the gateway's per-socket frame limits (driver/config.go: 10
// frames/s, burst 40, read at most 100/s) so that a few hundred sockets can offer a
// region more frames than it can take. The limiter is still called for every frame.
var unlimitedFrames = []string{"--driver-frame-rate", "1e9", "--driver-frame-burst", "1000000000", "--driver-frame-read-rate", "1e9"}

func envInt(tb testing.TB, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		tb.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

func envDuration(tb testing.TB, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		tb.Fatalf("%s=%q: want a positive duration", name, v)
	}
	return d
}

// cpuTime is the CPU time (user and system) this process has used so far.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// maskedFrame encodes payload (under 126 bytes) as one client text frame, masked with
// the zero key as RFC 6455 allows, so clients write prepared bytes without gorilla's
// per-frame work and the server under test gets most of the CPU.
func maskedFrame(payload []byte) []byte {
	if len(payload) >= 126 {
		panic("maskedFrame: payload over 125 bytes")
	}
	return append([]byte{0x81, 0x80 | byte(len(payload)), 0, 0, 0, 0}, payload...)
}

func locationPayload(p dispatch.Point) []byte {
	return fmt.Appendf(nil, `{"type":"location","lat":%.7f,"lng":%.7f}`, p.Lat, p.Lng)
}

// fleet is a set of client websockets writing prepared location frames.
type fleet struct {
	conns   []*websocket.Conn
	written atomic.Int64 // frames handed to the kernel
	stop    chan struct{}
	wg      sync.WaitGroup
}

// dialFleet opens n sockets to url (token(i) signs socket i, "" for none), 32 at a
// time. welcome: read the region's welcome, send a first location and available.
// Every socket gets a reader that discards what the server sends.
func dialFleet(tb testing.TB, url string, n int, token func(i int) string, welcome bool) *fleet {
	tb.Helper()
	f := &fleet{conns: make([]*websocket.Conn, n), stop: make(chan struct{})}
	hub := dispatch.Point{Lat: 37.5665, Lng: 126.9780}
	sem := make(chan struct{}, 32)
	errs := make(chan error, n)
	var dials sync.WaitGroup
	for i := range n {
		dials.Add(1)
		sem <- struct{}{}
		go func() {
			defer dials.Done()
			defer func() { <-sem }()
			h := http.Header{}
			if tok := token(i); tok != "" {
				h.Set("Authorization", "Bearer "+tok)
			}
			ctx, cancel := context.WithTimeout(context.Background(), dispatchtest.Patience)
			defer cancel()
			c, _, err := (&websocket.Dialer{}).DialContext(ctx, url, h)
			if err != nil {
				errs <- fmt.Errorf("dial %d: %w", i, err)
				return
			}
			f.conns[i] = c
			if tc, ok := c.NetConn().(*net.TCPConn); ok {
				// A small send buffer keeps the frames written close to the frames
				// read: the kernel holds at most this much of a socket's backlog.
				_ = tc.SetWriteBuffer(32 << 10)
			}
			if welcome {
				if _, m, err := c.ReadMessage(); err != nil || !strings.Contains(string(m), `"welcome"`) {
					errs <- fmt.Errorf("socket %d: welcome %s, %v", i, m, err)
					return
				}
				r := rand.New(rand.NewPCG(uint64(i), 1))
				if err := c.WriteMessage(websocket.TextMessage, locationPayload(offset(hub, r.NormFloat64()*1500, r.NormFloat64()*1500))); err != nil {
					errs <- err
					return
				}
				if err := c.WriteMessage(websocket.TextMessage, []byte(`{"type":"available"}`)); err != nil {
					errs <- err
					return
				}
			}
			// Pings are not answered: a pong written by the reader could split a frame
			// the writer is writing. The windows are far shorter than the read timeout.
			c.SetPingHandler(func(string) error { return nil })
			go func() {
				for {
					_, r, err := c.NextReader()
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, r)
				}
			}()
		}()
	}
	dials.Wait()
	close(errs)
	tb.Cleanup(f.close)
	for err := range errs {
		tb.Fatal(err)
	}
	return f
}

// blast makes every socket write batches of location frames around Seoul City Hall,
// each batch in one write, as fast as the server reads them (TCP flow control).
func (f *fleet) blast(perWrite int) {
	hub := dispatch.Point{Lat: 37.5665, Lng: 126.9780}
	for i, c := range f.conns {
		r := rand.New(rand.NewPCG(uint64(i), 2))
		base := offset(hub, r.NormFloat64()*1500, r.NormFloat64()*1500)
		var batches [][]byte
		for range 4 {
			var b []byte
			for range perWrite {
				b = append(b, maskedFrame(locationPayload(offset(base, r.Float64()*200, r.Float64()*200)))...)
			}
			batches = append(batches, b)
		}
		nc := c.NetConn()
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			for k := 0; ; k++ {
				select {
				case <-f.stop:
					return
				default:
				}
				if _, err := nc.Write(batches[k%len(batches)]); err != nil {
					return
				}
				f.written.Add(int64(perWrite))
			}
		}()
	}
}

func (f *fleet) close() {
	select {
	case <-f.stop:
		return
	default:
	}
	close(f.stop)
	for _, c := range f.conns {
		if c != nil {
			_ = c.Close() // unblocks a write held by flow control
		}
	}
	f.wg.Wait()
}

// phase is what one window measured.
type phase struct {
	absorbed, written int64
	cpu, elapsed      time.Duration
}

func (p phase) rate() float64 { return float64(p.absorbed) / p.elapsed.Seconds() }

// measure waits warm for a steady state, then counts over window the frames the
// server absorbed and the clients wrote, and the process's CPU time. (The window is
// a timed measurement, not a wait for a condition.)
func measure(tb testing.TB, warm, window time.Duration, absorbed func() int64, f *fleet) phase {
	<-time.After(warm)
	a0, w0, c0, t0 := absorbed(), f.written.Load(), cpuTime(tb), time.Now()
	<-time.After(window)
	a1, w1, c1, t1 := absorbed(), f.written.Load(), cpuTime(tb), time.Now()
	return phase{absorbed: a1 - a0, written: w1 - w0, cpu: c1 - c0, elapsed: t1.Sub(t0)}
}

// bareServer is the ceiling: a gorilla Upgrader with the gateway's buffer sizes and
// one goroutine per socket doing ReadMessage (and, if decode, json.Unmarshal of the
// frame into a small struct). discard skips websocket framing: it copies the raw
// bytes away, to measure what the clients themselves cost.
// stop closes the server's sockets (their backlog in the kernel is dropped) and waits
// for its readers to end.
func bareServer(tb testing.TB, decode, discard bool) (url string, frames *atomic.Int64, stop func()) {
	cfg := driver.DefaultConfig()
	up := websocket.Upgrader{ReadBufferSize: cfg.ReadBufferSize, WriteBufferSize: cfg.WriteBufferSize,
		CheckOrigin: func(*http.Request) bool { return true }}
	frames = new(atomic.Int64)
	var (
		mu      sync.Mutex
		conns   []*websocket.Conn
		readers sync.WaitGroup
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		readers.Add(1)
		defer readers.Done()
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
		if discard {
			_, _ = io.Copy(io.Discard, c.NetConn())
			return
		}
		c.SetReadLimit(int64(cfg.MaxFrameBytes))
		var loc struct {
			Type string  `json:"type"`
			Lat  float64 `json:"lat"`
			Lng  float64 `json:"lng"`
		}
		for {
			_, data, err := c.ReadMessage()
			if err != nil {
				return
			}
			if decode {
				if err := json.Unmarshal(data, &loc); err != nil || loc.Type != "location" {
					tb.Errorf("bare server: frame %s: %v", data, err)
					return
				}
			}
			frames.Add(1)
		}
	}))
	var once sync.Once
	stop = func() {
		once.Do(func() {
			mu.Lock()
			for _, c := range conns {
				_ = c.Close()
			}
			mu.Unlock()
			readers.Wait()
			srv.Close()
		})
	}
	tb.Cleanup(stop)
	return "ws" + strings.TrimPrefix(srv.URL, "http") + driver.Path, frames, stop
}

// counterValue reads a counter of the server's registry by name and one label.
func counterValue(tb testing.TB, s *server, name, label, value string) int64 {
	mfs, err := s.registry.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return int64(m.GetCounter().GetValue())
				}
			}
		}
	}
	return 0
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// BenchmarkIngestVsBareReadLoop compares, in one process run, the location frames a
// real region absorbs (in-process serve: gateway, strict frame decoding, engine
// UpdateLocation, memory store, supply index) with the ceiling of this stack on this
// machine: a bare gorilla read loop, with and without json.Unmarshal of each frame.
// The same clients feed each in turn: UNDERSTUDY_CEILING_CONNS sockets (default 200)
// writing prepared location frames, 16 per write, as fast as the server reads them.
// The region's per-socket frame limits are lifted (unlimitedFrames) so these few
// sockets can saturate it. Clients, servers and the test share the process: the
// clients' CPU per frame is measured first against a server that discards the raw
// bytes, and taken off each server's CPU. b.N is not used: each phase measures one
// window (UNDERSTUDY_CEILING_WINDOW, default 2 s, after 1 s of warm-up).
func BenchmarkIngestVsBareReadLoop(b *testing.B) {
	nConns := envInt(b, envCeilingConns, 200)
	window := envDuration(b, envCeilingWindow, 2*time.Second)
	const warm, perWrite = time.Second, 16
	noToken := func(int) string { return "" }
	b.Logf("load average before: %s", loadAverage())

	run := func(url string, token func(int) string, welcome bool, absorbed func() int64) phase {
		f := dialFleet(b, url, nConns, token, welcome)
		f.blast(perWrite)
		p := measure(b, warm, window, absorbed, f)
		f.close()
		return p
	}

	// The clients alone (and the kernel's loopback), against a server that only
	// drains the bytes.
	url, _, stop := bareServer(b, false, true)
	clients := run(url, noToken, false, func() int64 { return 0 })
	stop()
	if clients.written == 0 {
		b.Fatal("the clients wrote nothing to the discarding server")
	}
	clientCPU := float64(clients.cpu) / float64(clients.written) // ns per frame written

	serverCPU := func(p phase) float64 { // µs of server CPU per absorbed frame
		return (float64(p.cpu) - clientCPU*float64(p.written)) / float64(p.absorbed) / 1000
	}
	bare := func(decode bool) phase {
		url, frames, stop := bareServer(b, decode, false)
		defer stop()
		return run(url, noToken, false, frames.Load)
	}
	plain, decoded := bare(false), bare(true)

	b.StopTimer()
	s := mustServe(b, append([]string{"--match-interval", "100ms"}, unlimitedFrames...)...)
	b.StartTimer()
	tokens := func(i int) string { return mustToken(b, s, fmt.Sprintf("ceil-%d", i), dispatch.RoleDriver) }
	counted := func() int64 {
		return counterValue(b, s, "understudy_driver_frames_in_total", "type", driver.TypeLocation)
	}
	region := run(driverURL(s), tokens, true, counted)
	if n := counterValue(b, s, "understudy_driver_frames_refused_total", "type", driver.TypeLocation); n != 0 {
		b.Errorf("the region refused %d location frames", n)
	}
	for _, p := range []phase{plain, decoded, region} {
		if p.absorbed == 0 {
			b.Fatal("a server absorbed no frames")
		}
	}
	b.Logf("load average after: %s; %d sockets, window %s; clients %.3f µs/frame (%.0f frames/s written to a discarding server)",
		loadAverage(), nConns, window, clientCPU/1000, float64(clients.written)/clients.elapsed.Seconds())
	for _, c := range []struct {
		name string
		p    phase
	}{{"bare ReadMessage", plain}, {"bare ReadMessage+Unmarshal", decoded}, {"region", region}} {
		b.Logf("%-28s absorbed %9.0f frames/s, wrote %9.0f/s, process CPU %5.1f%% of a core, server %.2f µs/frame",
			c.name, c.p.rate(), float64(c.p.written)/c.p.elapsed.Seconds(),
			100*c.p.cpu.Seconds()/c.p.elapsed.Seconds(), serverCPU(c.p))
	}
	b.ReportMetric(plain.rate(), "bare-frames/s")
	b.ReportMetric(decoded.rate(), "bare-json-frames/s")
	b.ReportMetric(region.rate(), "region-frames/s")
	b.ReportMetric(region.rate()/plain.rate(), "region/bare")
	b.ReportMetric(region.rate()/decoded.rate(), "region/bare-json")
	b.ReportMetric(clientCPU/1000, "client-µs/frame")
	b.ReportMetric(serverCPU(plain), "bare-µs/frame")
	b.ReportMetric(serverCPU(decoded), "bare-json-µs/frame")
	b.ReportMetric(serverCPU(region), "region-µs/frame")
	b.ReportMetric(serverCPU(plain)/serverCPU(region), "bare/region-cpu")
}

// BenchmarkSocketToQueryable measures how long a location frame takes from its
// write on the driver's socket until the supply index finds the driver there, under
// a background of UNDERSTUDY_QUERYABLE_CONNS drivers (default 1,000) at 10 updates/s
// each, one frame per write. A probe driver far from the background fleet (12 km
// west of Seoul City Hall, beyond the 3 km pickup radius) moves back and forth
// between two points 2 km apart; after each frame the test polls (every 100 µs) the nearest-driver
// query riders' estimates use (Riders.Estimate: the supply index's Nearest) at the
// new point until the pickup ETA there falls under 10 s (the probe at the point; from
// the other one it is several minutes). The per-socket frame limits are lifted for
// the probe's pace (a sample every 5 ms); the limiter stays on the path.
func BenchmarkSocketToQueryable(b *testing.B) {
	nBg := envInt(b, envQueryableLoad, 1000)
	window := envDuration(b, envCeilingWindow, 5*time.Second)
	b.Logf("load average before: %s", loadAverage())
	b.StopTimer()
	s := mustServe(b, append([]string{"--match-interval", "100ms"}, unlimitedFrames...)...)
	bg := dialFleet(b, driverURL(s), nBg, func(i int) string {
		return mustToken(b, s, fmt.Sprintf("bg-%d", i), dispatch.RoleDriver)
	}, true)
	probe := dialFleet(b, driverURL(s), 1, func(int) string { return mustToken(b, s, "probe", dispatch.RoleDriver) }, true)
	dispatchtest.Eventually(b, supplied(s.engine, nBg+1))

	hub := dispatch.Point{Lat: 37.5665, Lng: 126.9780}
	// The background: each socket writes one frame every 100 ms, phases spread.
	for i, c := range bg.conns {
		r := rand.New(rand.NewPCG(uint64(i), 3))
		base := offset(hub, r.NormFloat64()*1500, r.NormFloat64()*1500)
		var frames [][]byte
		for range 8 {
			frames = append(frames, maskedFrame(locationPayload(offset(base, r.Float64()*200, r.Float64()*200))))
		}
		nc := c.NetConn()
		first := time.Duration(r.Int64N(int64(100 * time.Millisecond)))
		bg.wg.Add(1)
		go func() {
			defer bg.wg.Done()
			t := time.NewTimer(first)
			defer t.Stop()
			for k := 0; ; k++ {
				select {
				case <-bg.stop:
					return
				case <-t.C:
				}
				t.Reset(100 * time.Millisecond)
				if _, err := nc.Write(frames[k%len(frames)]); err != nil {
					return
				}
				bg.written.Add(1)
			}
		}()
	}

	points := [2]dispatch.Point{offset(hub, 0, -12000), offset(hub, 2000, -12000)}
	frames := [2][]byte{maskedFrame(locationPayload(points[0])), maskedFrame(locationPayload(points[1]))}
	seenAt := func(p dispatch.Point) (bool, error) {
		est, err := s.engine.Riders().Estimate(p, hub)
		if err != nil {
			return false, err
		}
		return est.PickupETAS != nil && *est.PickupETAS < 10, nil
	}
	nc := probe.conns[0].NetConn()
	counted := func() int64 {
		return counterValue(b, s, "understudy_driver_frames_in_total", "type", driver.TypeLocation)
	}
	<-time.After(time.Second) // the background's first round, then measure
	in0, t0 := counted(), time.Now()
	b.StartTimer()
	var lat []time.Duration
	poll := time.NewTicker(100 * time.Microsecond) // a spinning poll would take a core from the server
	defer poll.Stop()
	c0 := cpuTime(b)
	for k := 0; time.Since(t0) < window; k++ {
		to := k % 2
		if ok, err := seenAt(points[to]); err != nil || ok {
			b.Fatalf("probe already at point %d before its frame (%v)", to, err)
		}
		sent := time.Now()
		if _, err := nc.Write(frames[to]); err != nil {
			b.Fatal(err)
		}
		for {
			ok, err := seenAt(points[to])
			if err != nil {
				b.Fatal(err)
			}
			if ok {
				lat = append(lat, time.Since(sent))
				break
			}
			if time.Since(sent) > dispatchtest.Patience {
				b.Fatalf("probe not found at point %d %s after its frame", to, dispatchtest.Patience)
			}
			<-poll.C
		}
		<-time.After(5 * time.Millisecond)
	}
	b.StopTimer()
	elapsed := time.Since(t0)
	cpu := cpuTime(b) - c0
	bgRate := float64(counted()-in0-int64(len(lat))) / elapsed.Seconds()
	bg.close()
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.Logf("load average after: %s; %d samples, background %.0f updates/s from %d drivers; process CPU %.0f%% of a core",
		loadAverage(), len(lat), bgRate, nBg, 100*cpu.Seconds()/elapsed.Seconds())
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(pct(1), "max-ms")
	b.ReportMetric(float64(len(lat)), "samples")
	b.ReportMetric(bgRate, "background-updates/s")
}
