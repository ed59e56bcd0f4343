// Package sim is the fleet simulator behind `understudy sim`: thousands of drivers on
// real websockets (driver/client) moving around a city, riders arriving at a constant
// rate over the HTTP API (rider/client), and checks, while it loads, that every ride
// ends, that no ride has two drivers nor any driver two rides, and that the ledger
// holds each completed trip once. Its scenarios, metrics and thresholds are those of
// loadtest/scenarios.json, which the k6 scripts share.
package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/loadtest"
	"github.com/understudy/understudy/rider"
	riderclient "github.com/understudy/understudy/rider/client"
)

// Tokens mints (or looks up) the bearer token of sub in role.
type Tokens func(role dispatch.Role, sub string) (string, error)

// Config is one run. File and Scenario come from loadtest.Load, possibly changed by
// flags; URL is the region to start from.
type Config struct {
	File     loadtest.File
	Name     string // the scenario's name, for the summary
	Scenario loadtest.Scenario
	// URL is the base URL of a region (http://host:port). In a deployment of several
	// regions the clients learn the others from its GET /v1/regions.
	URL string
	// Regions are more base URLs of the deployment, tried when URL cannot be reached.
	Regions []string
	Tokens  Tokens
	// Admin is the admin token for the ledger check and the scenario's moves; "" asks
	// Tokens for one, and when that fails too both are skipped (and the summary says
	// so).
	Admin string
	// RunID prefixes the run's driver and rider ids, so runs against one region do
	// not meet each other's drivers. Default: from the clock.
	RunID string
	// Progress receives a line every ProgressEvery (default 5 s); nil for none.
	Progress      io.Writer
	ProgressEvery time.Duration
	Seed          uint64
	// ConnectRate caps new driver connections per second during the ramp (default
	// the fleet over ramp_s, at most 1,000/s).
	ConnectRate float64
}

// Summary is what a run measured and whether its thresholds held.
type Summary struct {
	Scenario   string            `json:"scenario"`
	URL        string            `json:"url"`
	RunID      string            `json:"run_id"`
	Drivers    int               `json:"drivers"`
	RidersPerS float64           `json:"riders_per_s"`
	Seconds    float64           `json:"seconds"` // the load phase, ramp included
	Drained    float64           `json:"drained_s"`
	Metrics    map[string]Stat   `json:"metrics"`
	Thresholds []ThresholdResult `json:"thresholds"`
	Checks     []string          `json:"checks"`             // the correctness checks made, or why one was skipped
	Problems   []string          `json:"problems,omitempty"` // the first correctness failures
	Errors     []string          `json:"errors,omitempty"`   // the first unexpected errors
	Passed     bool              `json:"passed"`
}

// ThresholdResult is one threshold expression and the value it was checked against.
type ThresholdResult struct {
	Metric string  `json:"metric"`
	Expr   string  `json:"expr"`
	Value  float64 `json:"value"`
	// NoData: the metric had no samples; as in k6, that does not fail the run.
	NoData bool `json:"no_data,omitempty"`
	OK     bool `json:"ok"`
}

// ErrThresholds: a run finished and at least one threshold failed.
var ErrThresholds = errors.New("sim: thresholds failed")

// Sim is one run in progress.
type Sim struct {
	cfg  Config
	city loadtest.City
	m    *metrics
	hc   *http.Client
	ws   string // the driver socket URL of cfg.URL

	rideCtx   context.Context // the riders' calls; ended when the drain ends
	stopRides context.CancelFunc

	connected atomic.Int64 // drivers with an open socket
	trips     atomic.Int64 // rides between 201 and a final status

	mu       sync.Mutex
	rides    map[string]*rideRec // every ride of the run
	early    map[string]time.Time
	assigned map[string]string // ride -> the driver it was assigned to
	problems []string
	suspects []suspect
	notes    []string // the first unexpected errors, for the summary
}

// rideRec is what the run knows of one ride.
type rideRec struct {
	sent     time.Time // the POST was sent
	offered  bool
	final    dispatch.RideStatus
	driver   string
	rider    *riderclient.Client
	matchedN int
	ended    time.Time // the ride's last update, once final (server time)
}

// suspect is a driver assigned a ride while the simulator still held it on another:
// a double assignment, unless the other had ended by then and its driver had not
// heard (a step answered while the socket moved). Checked once every ride is final.
type suspect struct {
	driver, on, assigned string
	at                   time.Time // the new ride's update that assigned it (server time)
}

// New checks cfg and prepares a run.
func New(cfg Config) (*Sim, error) {
	if err := cfg.Scenario.Validate(cfg.File); err != nil {
		return nil, err
	}
	u, err := url.Parse(strings.TrimRight(cfg.URL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--url %q: want http://host:port of a region", cfg.URL)
	}
	cfg.URL = u.String()
	if cfg.Tokens == nil {
		return nil, errors.New("sim: no way to get tokens")
	}
	if cfg.RunID == "" {
		cfg.RunID = fmt.Sprintf("s%x", time.Now().UnixMilli()%0xffffff)
	}
	if cfg.ProgressEvery <= 0 {
		cfg.ProgressEvery = 5 * time.Second
	}
	if cfg.Seed == 0 {
		cfg.Seed = uint64(time.Now().UnixNano())
	}
	ws := *u
	ws.Scheme = map[string]string{"http": "ws", "https": "wss"}[u.Scheme]
	ws.Path = "/v1/driver/ws"
	s := &Sim{
		cfg: cfg, city: cfg.File.Cities[cfg.Scenario.City], m: newMetrics(cfg.File.Metrics), ws: ws.String(),
		rides: map[string]*rideRec{}, early: map[string]time.Time{}, assigned: map[string]string{},
		hc: &http.Client{Transport: &http.Transport{
			Proxy: http.ProxyFromEnvironment, MaxIdleConns: 4096, MaxIdleConnsPerHost: 4096, IdleConnTimeout: 90 * time.Second,
		}},
	}
	return s, nil
}

// Run runs the scenario: drivers connect over ramp_s, riders arrive for duration_s,
// then the run drains (drivers finish their trips) for at most drain_s, and the
// checks run. It returns the summary; the error is ErrThresholds when a threshold
// failed, or why the run could not be made.
func (s *Sim) Run(ctx context.Context) (Summary, error) {
	sc := s.cfg.Scenario
	defer s.hc.CloseIdleConnections()
	if err := s.waitReady(ctx); err != nil {
		return Summary{}, err
	}
	admin := s.cfg.Admin
	if admin == "" {
		admin, _ = s.cfg.Tokens(dispatch.RoleAdmin, s.cfg.RunID+"-ops")
	}
	start := time.Now()
	load := time.Duration((sc.RampS + sc.DurationS) * float64(time.Second))
	loadCtx, stopLoad := context.WithTimeout(ctx, load) // arrivals, moves
	defer stopLoad()
	drivers, stopDrivers := context.WithCancel(ctx) // the fleet, until the drain ends
	defer stopDrivers()

	var fleet errgroup.Group
	rate := s.cfg.ConnectRate
	if rate <= 0 {
		rate = math.Min(1000, float64(sc.Drivers)/math.Max(sc.RampS, 1))
	}
	fleet.Go(func() error {
		tick := time.Duration(float64(time.Second) / math.Max(rate, 1))
		next := time.Now()
		for i := range sc.Drivers {
			if drivers.Err() != nil {
				return nil
			}
			d := s.newDriver(i)
			fleet.Go(func() error { d.run(drivers); return nil })
			next = next.Add(tick)
			if w := time.Until(next); w > 0 {
				if sleep(drivers, w) != nil {
					return nil
				}
			}
		}
		return nil
	})

	s.rideCtx, s.stopRides = context.WithCancel(ctx)
	defer s.stopRides()
	var riders sync.WaitGroup
	progress := make(chan struct{})
	go func() { defer close(progress); s.progress(loadCtx, start) }()
	if sc.RidersPerS > 0 {
		riders.Add(1)
		go func() {
			defer riders.Done()
			if sleep(loadCtx, time.Duration(sc.RampS*float64(time.Second))) != nil {
				return
			}
			s.arrivals(loadCtx, &riders)
		}()
	}
	for _, mv := range sc.Moves {
		riders.Add(1)
		go func() {
			defer riders.Done()
			if sleep(loadCtx, time.Duration((sc.RampS+mv.AtS)*float64(time.Second))) != nil {
				return
			}
			s.move(ctx, admin, mv)
		}()
	}
	<-loadCtx.Done()
	<-progress
	loaded := time.Since(start)
	// Drain: no more arrivals; the rides in flight end (the riders' goroutines wait
	// for their final status, bounded by drain_s), then the fleet goes home.
	drainStart := time.Now()
	drained := make(chan struct{})
	go func() { riders.Wait(); close(drained) }()
	drainTimer := time.NewTimer(time.Duration(sc.DrainS * float64(time.Second)))
	select {
	case <-drained:
	case <-drainTimer.C:
	case <-ctx.Done():
	}
	drainTimer.Stop()
	s.stopRides() // riders stop waiting; checkFinal reads what is left
	<-drained
	drainedFor := time.Since(drainStart)
	stopDrivers()
	_ = fleet.Wait()

	sum := Summary{Scenario: s.cfg.Name, URL: s.cfg.URL, RunID: s.cfg.RunID, Drivers: sc.Drivers, RidersPerS: sc.RidersPerS,
		Seconds: loaded.Seconds(), Drained: drainedFor.Seconds()}
	sum.Checks = append(sum.Checks, s.checkFinal(ctx)...)
	sum.Checks = append(sum.Checks, s.checkLedger(ctx, admin, start)...)
	sum.Metrics = s.m.stats(loaded.Seconds() + drainedFor.Seconds()) // the fleet runs through the drain
	sum.Passed = true
	names := make([]string, 0, len(s.cfg.File.Thresholds))
	for n := range s.cfg.File.Thresholds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		def, _ := s.cfg.File.Metric(n)
		for _, e := range s.cfg.File.Thresholds[n] {
			t, err := loadtest.ParseThreshold(def.Kind, e)
			if err != nil {
				return sum, err // Load checked them: a bug
			}
			v, ok := sum.Metrics[n].value(t)
			r := ThresholdResult{Metric: n, Expr: e, Value: v, NoData: !ok, OK: !ok || t.Holds(v)}
			sum.Passed = sum.Passed && r.OK
			sum.Thresholds = append(sum.Thresholds, r)
		}
	}
	s.mu.Lock()
	sum.Problems = s.problems
	sum.Errors = s.notes
	s.mu.Unlock()
	if !sum.Passed {
		return sum, ErrThresholds
	}
	return sum, nil
}

// waitReady polls the region's /readyz for up to a minute, so a run may start with
// the region it loads.
func (s *Sim) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.cfg.URL+"/readyz", nil)
		resp, err := s.hc.Do(req)
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b)))
		} else {
			last = err.Error()
		}
		if sleep(ctx, 200*time.Millisecond) != nil {
			return fmt.Errorf("%s/readyz not ready within a minute: %s", s.cfg.URL, last)
		}
	}
}

// problem records a correctness failure, with the first few kept for the summary.
func (s *Sim) problem(metric, format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.problemLocked(metric, format, args...)
}

func (s *Sim) problemLocked(metric, format string, args ...any) {
	s.m.add(metric, 1)
	if len(s.problems) < 20 {
		s.problems = append(s.problems, metric+": "+fmt.Sprintf(format, args...))
	}
}

// note keeps the first few unexpected errors (counted in the errors rate) for the
// summary.
func (s *Sim) note(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.notes) < 10 {
		s.notes = append(s.notes, fmt.Sprintf(format, args...))
	}
}

// progress prints a line every ProgressEvery until ctx ends.
func (s *Sim) progress(ctx context.Context, start time.Time) {
	if s.cfg.Progress == nil {
		return
	}
	t := time.NewTicker(s.cfg.ProgressEvery)
	defer t.Stop()
	lastUpd, lastReq, last := int64(0), int64(0), start
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			upd, req := s.m.count("location_updates"), s.m.count("rides_requested")
			dt := now.Sub(last).Seconds()
			offer := s.m.trend("request_to_offer").takeWindow()
			matched := s.m.trend("request_to_matched").takeWindow()
			created := s.m.trend("request_to_created").takeWindow()
			errs := s.m.rate("errors")
			fmt.Fprintf(s.cfg.Progress, "%5.0fs drivers %d/%d  updates/s %.0f  requests/s %.1f  in flight %d  created p99 %s  offer p50 %s p99 %s  matched p50 %s p99 %s  errors %d/%d\n",
				now.Sub(start).Seconds(), s.connected.Load(), s.cfg.Scenario.Drivers, float64(upd-lastUpd)/dt, float64(req-lastReq)/dt,
				s.trips.Load(), ms(created, 99), ms(offer, 50), ms(offer, 99), ms(matched, 50), ms(matched, 99),
				errs.trues.Load(), errs.total.Load())
			lastUpd, lastReq, last = upd, req, now
		}
	}
}

func ms(sorted []float64, p float64) string {
	if len(sorted) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0fms", loadtest.Percentile(sorted, p))
}

// arrivals starts a ride every 1/riders_per_s on average (Poisson arrivals) until
// ctx ends, each on its own goroutine: an open loop, new requests never wait for
// earlier ones.
func (s *Sim) arrivals(ctx context.Context, wg *sync.WaitGroup) {
	sc := s.cfg.Scenario
	r := rand.New(rand.NewPCG(s.cfg.Seed, 7))
	pool := make([]*riderclient.Client, RiderPool(sc))
	for i := range pool {
		tok, err := s.cfg.Tokens(dispatch.RoleRider, fmt.Sprintf("%s-u%d", s.cfg.RunID, i))
		if err != nil {
			s.problem("lost_rides", "rider token: %v", err)
			return
		}
		c := riderclient.New(s.cfg.URL, tok)
		c.HTTP, c.Regions = s.hc, s.cfg.Regions
		pool[i] = c
	}
	next := time.Now()
	for n := 0; ; n++ {
		next = next.Add(time.Duration(r.ExpFloat64() / sc.RidersPerS * float64(time.Second)))
		if w := time.Until(next); w > 0 && sleep(ctx, w) != nil {
			return
		}
		if ctx.Err() != nil {
			return
		}
		seed := r.Uint64()
		c := pool[n%len(pool)]
		wg.Add(1)
		go func() { defer wg.Done(); s.ride(c, seed) }()
	}
}

// RiderPool is how many riders a scenario's rides are spread over: enough that each
// has at most a few rides in flight (a ride lives up to pickup_s + trip_s plus its
// search), well under the rider API's per-rider limits (10 requests/s, 8 event
// streams). The k6 scripts use the same formula.
func RiderPool(sc loadtest.Scenario) int {
	life := sc.PickupS[1] + sc.TripS[1] + 20
	return max(32, int(math.Ceil(sc.RidersPerS*life/4)))
}

// move hands an area to another region, as the failover scenario does.
func (s *Sim) move(ctx context.Context, admin string, mv loadtest.Move) {
	if admin == "" {
		s.m.rate("errors").add(true)
		s.note("move %s to %s: no admin token", mv.Area, mv.To)
		return
	}
	body := strings.NewReader(fmt.Sprintf(`{"to":%q}`, mv.To))
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.URL+"/v1/admin/areas/"+url.PathEscape(mv.Area)+"/move", body)
	req.Header.Set("Authorization", "Bearer "+admin)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.hc.Do(req)
	if err == nil {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			err = fmt.Errorf("%d %s", resp.StatusCode, strings.TrimSpace(string(b)))
		}
	}
	s.m.rate("errors").add(err != nil)
	if err != nil {
		s.note("move %s to %s: %v", mv.Area, mv.To, err)
		return
	}
	if s.cfg.Progress != nil {
		fmt.Fprintf(s.cfg.Progress, "moved area %s to %s\n", mv.Area, mv.To)
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// rideRequest is a pickup near a hub and a dropoff within the city.
func (s *Sim) rideRequest(r *rand.Rand) rider.RideRequest {
	hub := hubPoint(s.city.Hubs[r.IntN(len(s.city.Hubs))])
	p := near(r, hub, s.city.RadiusM)
	return rider.RideRequest{Pickup: p, Dropoff: near(r, p, s.city.RadiusM/2)}
}
