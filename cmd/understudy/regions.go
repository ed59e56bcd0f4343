package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/httproute"
)

// How /v1/regions learns whether the other regions are up: it GETs each one's
// /healthz every regionProbeInterval, each probe bounded by regionProbeTimeout. An
// answer older than regionProbeStale (a probe that hangs, or none yet) is reported as
// unknown (null), never as a guess.
const (
	regionProbeInterval = 2 * time.Second
	regionProbeTimeout  = time.Second
	regionProbeStale    = 3 * regionProbeInterval
)

// newRegions sets the engine's router from the deployment (home regions serve their
// own areas) and answers GET /v1/regions; while open, it probes the other regions.
func (s *server) newRegions() *regions {
	rs := &regions{self: s.cfg.Region, probes: map[string]probe{}}
	if d := s.cfg.Deployment; d != nil {
		engine := s.engine
		rs.router = &dispatch.Router{Deployment: d, Region: s.cfg.Region,
			Serving: dispatch.HomeServing{Deployment: d, Region: s.cfg.Region, Epoch: func() uint64 { return engine.Epoch }}}
		s.engine.Router = rs.router
	}
	return rs
}

// regions answers GET /v1/regions.
type regions struct {
	self   string
	router *dispatch.Router // nil: one region serving everywhere
	stop   context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	probes map[string]probe // the other regions' last /healthz answers
}

type probe struct {
	up bool
	at time.Time
}

// Routes lists what regions serves.
func (rs *regions) Routes() []httproute.Route {
	return []httproute.Route{{Method: http.MethodGet, Path: "/v1/regions", Handler: http.HandlerFunc(rs.serve)}}
}

// Open starts probing the other regions, until Close.
func (rs *regions) Open(context.Context) error {
	ctx, stop := context.WithCancel(context.Background())
	rs.stop, rs.done = stop, make(chan struct{})
	go func() { defer close(rs.done); rs.run(ctx) }()
	return nil
}

// Close stops the probes and waits for them.
func (rs *regions) Close() error {
	if rs.stop != nil {
		rs.stop()
		<-rs.done
		rs.stop = nil
	}
	return nil
}

func (rs *regions) serve(w http.ResponseWriter, r *http.Request) {
	var v dispatch.RegionsView
	if rs.router == nil {
		// No deployment: this region serves everywhere, and has no areas to list.
		up := true
		v = dispatch.RegionsView{Regions: []dispatch.RegionView{{Name: rs.self, URL: "http://" + r.Host, Up: &up}}, Areas: []dispatch.AreaView{}}
	} else {
		v = rs.router.View(rs.up)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}

// up is true for this region and the last fresh probe's answer for the others.
func (rs *regions) up(name string) *bool {
	if name == rs.self {
		up := true
		return &up
	}
	rs.mu.Lock()
	p, ok := rs.probes[name]
	rs.mu.Unlock()
	if !ok || time.Since(p.at) > regionProbeStale {
		return nil
	}
	return &p.up
}

// run probes the other regions' /healthz until ctx ends.
func (rs *regions) run(ctx context.Context) {
	if rs.router == nil {
		return
	}
	hc := &http.Client{Timeout: regionProbeTimeout}
	defer hc.CloseIdleConnections()
	t := time.NewTicker(regionProbeInterval)
	defer t.Stop()
	for {
		var wg sync.WaitGroup
		for _, r := range rs.router.Deployment.Regions {
			if r.Name == rs.self {
				continue
			}
			wg.Go(func() {
				up := probeHealthz(ctx, hc, r.URL)
				if ctx.Err() != nil {
					return
				}
				rs.mu.Lock()
				rs.probes[r.Name] = probe{up: up, at: time.Now()}
				rs.mu.Unlock()
			})
		}
		wg.Wait()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// probeHealthz reports whether base/healthz answers 200.
func probeHealthz(ctx context.Context, hc *http.Client, base string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/healthz", nil)
	if err != nil {
		return false
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
