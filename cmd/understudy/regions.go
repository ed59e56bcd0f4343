package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/httpauth"
	"github.com/understudy/understudy/dispatch/httproute"
	"github.com/understudy/understudy/dispatch/natslog"
	"github.com/understudy/understudy/dispatch/problem"
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

// newRegions sets the engine's router from the deployment and the lease table (a
// region serves the areas whose leases it holds), hooks the lease table to the
// engine (it adopts the areas it takes; the clients of areas that move are sent on),
// and answers GET /v1/regions and the admin move; while open, it probes the other
// regions.
func (s *server) newRegions(v dispatch.Verifier) *regions {
	rs := &regions{self: s.cfg.Region, probes: map[string]probe{}, keys: v, leases: s.leases,
		log: s.log.With(slog.String("component", "regions"))}
	if d := s.cfg.Deployment; d != nil {
		rs.router = &dispatch.Router{Deployment: d, Region: s.cfg.Region, Serving: s.leases}
		s.engine.Router = rs.router
		s.leases.Adopt, s.leases.Moved = s.engine.Adopt, s.engine.Moved
		s.leases.Logger = s.log.With(slog.String("component", "leases"))
		s.leases.Metrics = newLeaseMetrics(s.registry)
	}
	return rs
}

// regions answers GET /v1/regions.
type regions struct {
	self   string
	router *dispatch.Router // nil: one region serving everywhere
	leases *natslog.Leases  // nil without a deployment
	keys   dispatch.Verifier
	log    *slog.Logger
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
	return []httproute.Route{
		{Method: http.MethodGet, Path: "/v1/regions", Handler: http.HandlerFunc(rs.serve)},
		{Method: http.MethodPost, Path: "/v1/admin/areas/{name}/move", Handler: http.HandlerFunc(rs.move)},
	}
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
	// Public, and asked by pages of any region (the web apps failing over): any origin
	// may read it.
	w.Header().Set("Access-Control-Allow-Origin", "*")
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

// moveRequest is the body of POST /v1/admin/areas/{name}/move.
type moveRequest struct {
	To string `json:"to"`
}

// MoveResult answers POST /v1/admin/areas/{name}/move: the area now served by To
// under Epoch.
type MoveResult struct {
	Area  string `json:"area"`
	From  string `json:"from"`
	To    string `json:"to"`
	Epoch uint64 `json:"epoch"`
}

// forwardedHeader marks a move a region passed on to the area's holder, which must
// not pass it on again.
const forwardedHeader = "X-Understudy-Forwarded-By"

// moveWait bounds how long a move waits to see the new region serve the area.
const moveWait = 10 * time.Second

// move is POST /v1/admin/areas/{name}/move (admin token): the planned hand-over of
// an area to region to (hand-back included). The region holding the area stops
// serving it and names to in the lease, which to claims: it fences the area and
// adopts its rides from the log, and its drivers and riders are sent there. Asked of
// another region, the move is passed on to the holder. A move to a region that is
// down is refused (409), and so is one while nobody holds the area (503 no_lease).
// It answers once this region sees to serving the area.
func (rs *regions) move(w http.ResponseWriter, r *http.Request) {
	if err := rs.doMove(w, r); err != nil {
		problem.Write(w, r, err)
	}
}

func (rs *regions) doMove(w http.ResponseWriter, r *http.Request) error {
	if _, err := httpauth.Authenticate(rs.keys, r, dispatch.RoleAdmin); err != nil {
		return err
	}
	if rs.leases == nil {
		return dispatch.Errorf(dispatch.ECodeNotFound, "this region runs without a deployment file: it has no areas to move")
	}
	area := r.PathValue("name")
	if _, ok := rs.router.Deployment.Area(area); !ok {
		return dispatch.Errorf(dispatch.ECodeNotFound, "no area %q in this deployment", dispatch.Clip(area, 64))
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<10+1))
	if err != nil {
		return dispatch.Errorf(dispatch.ECodeInvalid, "read body: %v", err)
	}
	if len(body) > 4<<10 {
		return dispatch.Errorf(dispatch.ECodeTooLarge, "a move's body is at most 4 KiB")
	}
	var req moveRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || dec.More() {
		return dispatch.Errorf(dispatch.ECodeInvalid, "want {\"to\": \"<region>\"}")
	}
	if _, ok := rs.router.Deployment.Region(req.To); !ok {
		return dispatch.Errorf(dispatch.ECodeInvalid, "to: no region %q in this deployment", dispatch.Clip(req.To, 64))
	}
	if up := rs.up(req.To); up == nil || !*up {
		return dispatch.Errorf(dispatch.ECodeConflict, "region %s is not up (as this region last saw it): not moving area %s there", req.To, area)
	}
	ctx, cancel := context.WithTimeout(r.Context(), moveWait)
	defer cancel()
	moveRev, err := rs.leases.Move(ctx, area, req.To)
	var nh *natslog.ErrNotHolder
	switch {
	case errors.As(err, &nh) && nh.Holder != "" && nh.Holder != rs.self && r.Header.Get(forwardedHeader) == "":
		return rs.forward(ctx, w, r, nh.Holder, body)
	case errors.As(err, &nh):
		return &dispatch.Error{Code: dispatch.ECodeNoLease, RetryAfterS: 1,
			Message: fmt.Sprintf("area %s: %s, so it cannot be moved now: retry shortly", area, nh.Error())}
	case err != nil:
		return err
	}
	// Answer once the new holder says it serves the area under the move's epoch
	// (claimed, fenced and adopted), as its own /v1/regions tells.
	if req.To == rs.self {
		rs.log.Info("area moved", slog.String("area", area), slog.String("to", req.To), slog.Uint64("epoch", moveRev))
		w.Header().Set("Content-Type", "application/json")
		return json.NewEncoder(w).Encode(MoveResult{Area: area, From: rs.self, To: req.To, Epoch: moveRev})
	}
	target, _ := rs.router.Deployment.Region(req.To)
	hc := &http.Client{Timeout: time.Second}
	defer hc.CloseIdleConnections()
	for {
		if servesAt(ctx, hc, target.URL, area, req.To, moveRev) {
			rs.log.Info("area moved", slog.String("area", area), slog.String("to", req.To), slog.Uint64("epoch", moveRev))
			w.Header().Set("Content-Type", "application/json")
			return json.NewEncoder(w).Encode(MoveResult{Area: area, From: rs.self, To: req.To, Epoch: moveRev})
		}
		select {
		case <-ctx.Done():
			return dispatch.Errorf(dispatch.ECodeUnavailable, "area %s was handed to region %s, which has not taken it within %s: see GET /v1/regions", area, req.To, moveWait)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// servesAt reports whether the region at base says, in its /v1/regions, that region
// serves area under epoch.
func servesAt(ctx context.Context, hc *http.Client, base, area, region string, epoch uint64) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/v1/regions", nil)
	if err != nil {
		return false
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var v dispatch.RegionsView
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&v); err != nil {
		return false
	}
	for _, a := range v.Areas {
		if a.Name == area {
			return a.ServedBy != nil && *a.ServedBy == region && a.Epoch != nil && *a.Epoch == epoch
		}
	}
	return false
}

// forward passes a move on to the region holding the area, and relays its answer.
func (rs *regions) forward(ctx context.Context, w http.ResponseWriter, r *http.Request, holder string, body []byte) error {
	reg, _ := rs.router.Deployment.Region(holder)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(reg.URL, "/")+r.URL.Path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", r.Header.Get("Authorization"))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(forwardedHeader, rs.self)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return &dispatch.Error{Code: dispatch.ECodeUnavailable, Message: "region " + holder + " holds the area but did not answer: " + err.Error(), Err: err}
	}
	defer resp.Body.Close()
	for _, h := range []string{"Content-Type", "Retry-After"} {
		if v := resp.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, io.LimitReader(resp.Body, 64<<10))
	return nil
}

// newLeaseMetrics registers the lease table's figures.
func newLeaseMetrics(reg prometheus.Registerer) *natslog.LeaseMetrics {
	held := prometheus.NewGauge(prometheus.GaugeOpts{Name: "understudy_leases_held",
		Help: "Areas this region serves now (holds a valid lease of, fenced and adopted)."})
	renew := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "understudy_lease_renew_seconds",
		Help: "Round trip of each lease renewal, by outcome.", Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 10)}, []string{"outcome"})
	took := prometheus.NewCounter(prometheus.CounterOpts{Name: "understudy_lease_takeovers_total",
		Help: "Areas this region took from another region (a lost region's, or moved to it)."})
	reg.MustRegister(held, renew, took)
	return &natslog.LeaseMetrics{
		Held: func(n int) { held.Set(float64(n)) },
		Renewed: func(d time.Duration, ok bool) {
			outcome := "ok"
			if !ok {
				outcome = "failed"
			}
			renew.WithLabelValues(outcome).Observe(d.Seconds())
		},
		TookOver: took.Inc,
	}
}
