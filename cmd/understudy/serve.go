package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/httproute"
	"github.com/understudy/understudy/dispatch/natsbus"
	"github.com/understudy/understudy/dispatch/natslog"
	"github.com/understudy/understudy/dispatch/problem"
	"github.com/understudy/understudy/dispatch/prommetrics"
	"github.com/understudy/understudy/driver"
	"github.com/understudy/understudy/rider"
)

// server is one running region: the engine, its store, the gateways and the HTTP
// listener.
type server struct {
	cfg        Config
	log        *slog.Logger
	engine     *dispatch.Engine
	store      dispatch.Store
	idem       dispatch.IdempotencyStore // the rider API's keys; store, idem and limiter: see openHotState
	keys       *keyring
	registry   *prometheus.Registry
	gateway    *driver.Gateway
	pay        *driver.Pay
	riderAPI   *rider.API
	regions    *regions             // GET /v1/regions and the engine's router
	admin      *admin               // the operator's map cells and sign-in links
	bus        *natsbus.Bus         // the region's other replicas
	components []component          // what has a lifecycle, in opening order
	limiter    dispatch.RateLimiter // per caller, for every route that takes a token
	ledger     *natslog.Ledger
	rideLog    *natslog.RideLog
	leases     *natslog.Leases           // the areas' leases, in a deployment of several regions
	natsIdem   *natslog.IdempotencyStore // the keys' bucket when the hot state is in memory (openStreams)
	clustered  bool                      // the log is on a cluster of the deployment's regions (replicas)
	nats       *nats.Conn
	closers    []func() error // what close releases, in opening order
	listener   net.Listener
	mux        *http.ServeMux // every route of routes
	maxConns   int            // the listener's cap on open connections
	http       *http.Server
	// natsGone is closed when the NATS connection closes without close asking: it
	// cannot be reopened, so run ends and the process exits for its supervisor to
	// start it again (see natsOptions).
	natsGone chan struct{}
	natsLost atomic.Pointer[natsLoss] // nil while connected
	closing  atomic.Bool              // close has begun
	// secretSource says where the development secret came from, for the start-up log.
	secretSource string
}

// lifecycle is the shape of every part of the server that runs: Open starts it (what
// it starts runs until Close; ctx bounds only the opening), Close stops it and waits.
type lifecycle interface {
	Open(ctx context.Context) error
	Close() error
}

// drainer is a part that must drain before it closes: tell its clients to go
// elsewhere, and wait for them within ctx.
type drainer interface {
	Drain(ctx context.Context) error
}

// component is a part of the server with a lifecycle, and its name for errors.
type component struct {
	name string
	lifecycle
}

// openServer wires a region by hand from cfg and binds its listener, so a bad address
// fails here rather than after start-up. On error it releases what it opened.
func openServer(ctx context.Context, cfg Config, log *slog.Logger) (_ *server, err error) {
	s := &server{cfg: cfg, log: log, registry: prometheus.NewRegistry()}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if s.keys, s.secretSource, err = openKeyring(cfg); err != nil {
		return nil, err
	}
	if err := s.openLog(ctx); err != nil {
		return nil, err
	}
	if err := s.openHotState(ctx); err != nil {
		return nil, err
	}
	s.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "understudy_nats_connected",
			Help: "1 while the region's connection to its NATS (the ride log, the ledger, the leases) is up, else 0."},
			func() float64 {
				if s.nats != nil && s.nats.Status() == nats.CONNECTED {
					return 1
				}
				return 0
			}))
	s.engine = &dispatch.Engine{Store: s.store, Ledger: s.ledger, Log: s.rideLog, Region: cfg.Region, Config: cfg.Dispatch,
		Logger: log.With(slog.String("component", "dispatch"))}
	s.engine.Metrics = prommetrics.New(s.registry, s.engine)
	s.gateway, s.pay = s.newGateway(s.keys), s.newPay(s.keys)
	s.riderAPI = s.newRiderAPI(s.keys)
	s.regions = s.newRegions(s.keys)
	s.admin = s.newAdmin(s.keys)
	local := dispatch.Notifiers{s.gateway, s.riderAPI}
	// This replica's events go to its own clients directly and to the other replicas
	// through the bus, which hands theirs to the engine and to the same clients (in
	// step with this engine's own events for the same driver).
	s.bus = &natsbus.Bus{Conn: s.nats, Region: cfg.Region, Engine: s.engine.Replicas(), Local: s.engine.Replicas().Deliver(local),
		Logger: log.With(slog.String("component", "bus")), Metrics: natsbus.NewMetrics(s.registry)}
	s.engine.Notifier = local
	s.engine.Peers = s.bus
	// The components, in the order they open: each one before what calls it (the
	// engine tells the gateway and the rider API its events, the bus feeds the engine).
	// At shutdown they drain, then close, in the reverse order (run, close).
	s.components = []component{
		{"driver gateway", s.gateway},
		{"rider API", s.riderAPI},
		{"engine", s.engine},
		{"bus", s.bus},
		{"regions", s.regions},
	}
	if s.leases != nil {
		// Last to open (it adopts areas into the engine) and first to close (the
		// leases lapse for the successor while the rest drains).
		s.components = append(s.components, component{"leases", s.leases})
	}
	for _, c := range s.components {
		if err := c.Open(ctx); err != nil {
			return nil, fmt.Errorf("open %s: %w", c.name, err)
		}
		s.closers = append(s.closers, c.Close)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	s.maxConns = cfg.HTTP.maxConns()
	s.listener = newLimitListener(ln, s.maxConns, newConnMetrics(s.registry, s.maxConns))
	s.http = s.newHTTPServer()
	return s, nil
}

// openLog connects the durable log: the deployment's NATS with --nats; else, in a
// deployment of several regions, the region's own node of their cluster, embedded in
// this process (openClusterNode); else a NATS server embedded in this process. The
// embedded node keeps JetStream in the data directory and writes its URL there for
// `understudy ledger export`.
func (s *server) openLog(ctx context.Context) error {
	log := s.log.With(slog.String("component", "nats"))
	opts, connected := s.natsOptions(log)
	if s.cfg.NATSURL != "" {
		if s.cfg.Deployment != nil {
			opts, s.clustered = append(opts, natslog.ClusterOptions()...), true
		}
		nc, err := natslog.Connect(s.cfg.NATSURL, append(opts, nats.RetryOnFailedConnect(true))...)
		if err != nil {
			return err
		}
		s.nats = nc
		s.closers = append(s.closers, func() error { nc.Close(); return nil })
		return s.awaitStreams(ctx, log, s.cfg.NATSURL, connected)
	}
	if d := s.cfg.Deployment; d != nil {
		if own, _ := d.Region(s.cfg.Region); own.NATS != "" && own.NATSCluster != "" {
			s.clustered = true
			return s.openClusterNode(ctx, log, opts, connected)
		}
		// The regions' leases live in one NATS bucket: regions on NATS servers of
		// their own would each grant themselves every area.
		return fmt.Errorf("deployment %s: region %q has no nats and nats_cluster addresses for its embedded node, and no --nats was given: the regions of a deployment must share one NATS cluster", s.cfg.DeploymentFile, s.cfg.Region)
	}
	emb, err := natslog.StartEmbedded(filepath.Join(s.cfg.DataDir, "nats"), "127.0.0.1:0")
	if err != nil {
		return err
	}
	s.closers = append(s.closers, func() error { emb.Close(); return nil })
	if err := os.WriteFile(filepath.Join(s.cfg.DataDir, natsURLFile), []byte(emb.URL()+"\n"), 0o600); err != nil {
		return fmt.Errorf("write nats url: %w", err)
	}
	nc, err := emb.Connect(opts...)
	if err != nil {
		return fmt.Errorf("connect to embedded nats: %w", err)
	}
	s.nats = nc
	s.closers = append(s.closers, func() error { nc.Close(); return nil })
	return s.openStreams(ctx)
}

// natsOptions returns the options of the region's NATS connection, which reconnects
// forever with backoff (natslog.Connect) and logs what happens to it, and a channel
// that hears each (re)connect. nats.go closes a connection for good on some protocol
// errors (no request can cause one any more: every subject is bounded); then
// natsGone is closed and run ends with an error rather than keep a region that
// cannot write.
func (s *server) natsOptions(log *slog.Logger) ([]nats.Option, <-chan struct{}) {
	s.natsGone = make(chan struct{})
	var gone sync.Once
	connected := make(chan struct{}, 1)
	return []nats.Option{
		natslog.Logged(log),
		func(o *nats.Options) error { // after Logged: keep its callbacks
			up := func(nc *nats.Conn) {
				s.natsLost.Store(nil)
				select {
				case connected <- struct{}{}:
				default:
				}
			}
			o.ConnectedCB, o.ReconnectedCB = chain(o.ConnectedCB, up), chain(o.ReconnectedCB, up)
			logged := o.DisconnectedErrCB
			o.DisconnectedErrCB = func(nc *nats.Conn, err error) {
				s.natsLost.Store(&natsLoss{at: time.Now(), err: err})
				if logged != nil {
					logged(nc, err)
				}
			}
			return nil
		},
		nats.ClosedHandler(func(nc *nats.Conn) {
			if s.closing.Load() {
				return
			}
			log.Error("nats connection closed for good: stopping the region", slog.Any("err", nc.LastError()))
			gone.Do(func() { close(s.natsGone) })
		}),
	}, connected
}

// natsLoss is when and why the NATS connection was lost, for /readyz.
type natsLoss struct {
	at  time.Time
	err error
}

// chain returns a handler that runs first, then then.
func chain(first, then nats.ConnHandler) nats.ConnHandler {
	return func(nc *nats.Conn) {
		if first != nil {
			first(nc)
		}
		then(nc)
	}
}

// awaitStreams opens the ledger and the ride log on the deployment's NATS at url,
// waiting (and logging why) until it answers, so a region may start before its NATS
// and a cluster may still be placing its first streams.
func (s *server) awaitStreams(ctx context.Context, log *slog.Logger, url string, connected <-chan struct{}) error {
	pause := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		var err error
		if st := s.nats.Status(); st != nats.CONNECTED {
			err = fmt.Errorf("connection %s: %v", strings.ToLower(st.String()), s.nats.LastError())
		} else if err = s.openStreams(ctx); err == nil {
			return nil
		}
		log.Warn("waiting for nats jetstream", slog.String("url", url), slog.Int("attempt", attempt), slog.Any("err", err))
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for nats at %s: %w", url, ctx.Err())
		case <-connected:
		case <-time.After(pause):
			pause = min(2*pause, 5*time.Second)
		}
	}
}

// openStreams opens the ledger, the ride log and, when the hot state is in memory,
// the idempotency keys' bucket, with s.replicas() copies each.
func (s *server) openStreams(ctx context.Context) (err error) {
	if s.ledger, err = natslog.OpenLedger(ctx, s.nats, s.replicas()); err != nil {
		return err
	}
	if s.rideLog, err = natslog.OpenRideLog(ctx, s.nats, s.cfg.Region, s.replicas()); err != nil {
		return err
	}
	if d := s.cfg.Deployment; d != nil {
		if s.leases, err = natslog.OpenLeases(ctx, s.nats, d, s.cfg.Region, s.rideLog, s.replicas()); err != nil {
			return err
		}
		s.rideLog.Fences = s.leases
	}
	if scope, ok := s.idempotencyScope(); ok {
		rc := s.cfg.Rider
		if s.natsIdem, err = natslog.OpenIdempotencyStore(ctx, s.nats, scope, max(rc.IdempotencyTTL, rc.PendingTTL), s.replicas()); err != nil {
			return fmt.Errorf("open idempotency keys: %w", err)
		}
	}
	return nil
}

// idempotencyScope says whether the rider API's Idempotency-Keys are in the NATS
// bucket, and under which scope: with the hot state in memory, this region's; in a
// deployment of several regions always, under one scope for all regions, so that a
// key used at a region that was lost is still known to its successor (Redis is the
// region's own and goes with it).
func (s *server) idempotencyScope() (string, bool) {
	switch {
	case s.cfg.Deployment != nil:
		return "deployment", true
	case s.storeName() == "memory":
		return s.cfg.Region, true
	}
	return "", false
}

// natsURLFile, in the data directory, holds the embedded NATS server's URL while it runs.
const natsURLFile = "nats.url"

// close releases what openServer opened, last first.
func (s *server) close() error {
	s.closing.Store(true)
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		if err := s.closers[i](); err != nil {
			errs = append(errs, err)
		}
	}
	s.closers = nil
	return errors.Join(errs...)
}

// routes lists everything the server serves: its own operations routes, then each
// component's. docs/openapi.yaml describes exactly these (TestOpenAPIDescribesEveryRoute).
func (s *server) routes() []httproute.Route {
	routes := []httproute.Route{
		{Method: http.MethodGet, Path: "/healthz", Handler: http.HandlerFunc(healthy)},
		{Method: http.MethodGet, Path: "/readyz", Handler: http.HandlerFunc(s.ready)},
		{Method: http.MethodGet, Path: "/metrics", Handler: promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{})},
	}
	return slices.Concat(routes, s.gateway.Routes(), s.withCORS(s.pay.Routes()), s.riderAPI.Routes(), s.regions.Routes(), s.admin.Routes())
}

// handler serves mux behind what every request goes through: a 5xx logged with its
// cause, a declared body over the limit refused unread, what waits on the durable log
// refused while NATS is away, and unknown paths and methods answered as problems.
func (s *server) handler(mux *http.ServeMux) http.Handler {
	return problem.LogServerErrors(s.log.With(slog.String("component", "http")),
		refuseLargeBodies(s.cfg.Rider.MaxBodyBytes, s.whileNATSAway(s.apps(problem.Routes(mux)))))
}

// healthy answers that the process is up.
func healthy(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "ok\n")
}

// ready answers 200 while the region can serve: its store answers and its log is
// connected. Otherwise 503, and the body says what is missing.
func (s *server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if _, err := s.store.Fence(ctx, 0); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprintf(w, "store: %v\n", err)
		return
	}
	if why := s.natsAway(); why != "" {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprintf(w, "nats: %s\n", why)
		return
	}
	_, _ = io.WriteString(w, "ready\n")
}

// natsAway says why the NATS connection cannot be used now, or "" if it can.
func (s *server) natsAway() string {
	st := s.nats.Status()
	if st == nats.CONNECTED {
		return ""
	}
	why := strings.ToLower(st.String())
	if url := cmp.Or(s.nats.ConnectedUrlRedacted(), s.cfg.NATSURL); url != "" {
		why += " to " + url
	}
	if lost := s.natsLost.Load(); lost != nil {
		why += fmt.Sprintf(", away for %s (%v)", time.Since(lost.at).Round(time.Second), lost.err)
	}
	if err := s.nats.LastError(); err != nil {
		why += ": " + err.Error()
	}
	return why
}

// whileNATSAway answers 503 (Retry-After 1) to requests that would wait on the durable
// log while NATS is away: those that change rides or drivers (every write but an
// estimate) and pay reads. Reads of rides, their event streams and the driver socket
// go on from the Store.
func (s *server) whileNATSAway(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if needsLog(r) {
			if why := s.natsAway(); why != "" {
				w.Header().Set("Retry-After", "1")
				problem.Write(w, r, dispatch.Errorf(dispatch.ECodeUnavailable, "the durable log is away (nats %s): retry shortly", why))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// needsLog reports whether r waits on the durable log (see whileNATSAway).
func needsLog(r *http.Request) bool {
	switch r.URL.Path {
	case "/v1/driver/trips", "/v1/driver/earnings", "/v1/admin/ledger":
		return true
	case "/v1/estimates":
		return false
	}
	return strings.HasPrefix(r.URL.Path, "/v1/") && r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodOptions
}

// Addr is the address the server listens on (useful with port 0).
func (s *server) Addr() string { return s.listener.Addr().String() }

// run serves until ctx ends, then shuts down within the configured deadline: every
// component drains, last opened first, the HTTP server finishes the requests in
// flight, and close closes the components, last opened first (the bus last of all, so
// what the drain changes still reaches the replicas that take over), then the rest.
func (s *server) run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		select {
		case <-gctx.Done():
			return nil
		case <-s.natsGone:
			return fmt.Errorf("nats connection closed for good (%v): restart the region", s.nats.LastError())
		}
	})
	g.Go(func() error {
		if err := s.http.Serve(s.listener); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		s.log.Info("shutting down", slog.Duration("deadline", s.cfg.ShutdownTimeout))
		sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		defer cancel()
		var errs []error
		for _, c := range slices.Backward(s.components) {
			if d, ok := c.lifecycle.(drainer); ok {
				if err := d.Drain(sctx); err != nil {
					errs = append(errs, fmt.Errorf("drain %s: %w", c.name, err))
				}
			}
		}
		return errors.Join(append(errs, s.http.Shutdown(sctx))...)
	})
	err := g.Wait()
	if cerr := s.close(); err == nil {
		err = cerr
	}
	return err
}

// serve is the `understudy serve` command. ready, if not nil, receives the server once
// it listens (tests use it to learn the port).
func serve(ctx context.Context, args []string, stdout, stderr io.Writer, ready func(*server)) error {
	cfg, err := loadConfig(args, os.Getenv, stderr)
	if err != nil {
		return err
	}
	level, _ := parseLevel(cfg.LogLevel)
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: slog.Level(level)}))
	s, err := openServer(ctx, cfg, log)
	if err != nil {
		return err
	}
	if cfg.DebugAddr != "" {
		stop, err := serveDebug(cfg.DebugAddr, log)
		if err != nil {
			_ = s.close()
			return err
		}
		defer stop()
	}
	log.Info("understudy serving", slog.String("addr", s.Addr()), slog.String("version", version),
		slog.String("data_dir", cfg.DataDir), slog.String("store", s.storeName()), slog.String("region", cfg.Region),
		slog.Int("max_conns", s.maxConns), slog.String("dev_secret", s.secretSource))
	fmt.Fprintf(stdout, "understudy listening on http://%s\n", s.Addr())
	s.printApps(stdout)
	if ready != nil {
		ready(s)
	}
	s.keys.reloadOnHangup(ctx, log)
	return s.run(ctx)
}
