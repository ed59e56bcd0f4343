package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/jwtauth"
	"github.com/understudy/understudy/dispatch/memstore"
	"github.com/understudy/understudy/dispatch/prommetrics"
	"github.com/understudy/understudy/dispatch/redisstore"
)

// server is one running region: the engine, its store, the gateways and the HTTP
// listener.
type server struct {
	cfg        Config
	log        *slog.Logger
	engine     *dispatch.Engine
	store      dispatch.Store
	keys       *jwtauth.Keys
	registry   *prometheus.Registry
	components []component
	listener   net.Listener
	http       *http.Server
}

// component is a part mounted on the server (the driver gateway, the rider API): its
// routes, its share of the engine's events, and its drain at shutdown.
type component struct {
	name   string
	routes func(mux *http.ServeMux)
	notify dispatch.Notifier               // may be nil
	run    func(ctx context.Context) error // background work until ctx ends; may be nil
	drain  func(ctx context.Context) error // tell clients to go elsewhere; may be nil
}

// openServer wires a region by hand from cfg and binds its listener, so a bad address
// fails here rather than after start-up.
func openServer(ctx context.Context, cfg Config, log *slog.Logger) (*server, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	keys, err := loadKeys(cfg)
	if err != nil {
		return nil, err
	}
	store, err := openStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	s := &server{cfg: cfg, log: log, store: store, keys: keys, registry: prometheus.NewRegistry()}
	s.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.engine = &dispatch.Engine{Store: s.store, Config: cfg.Dispatch, Logger: log.With(slog.String("component", "dispatch"))}
	s.engine.Metrics = prommetrics.New(s.registry, s.engine)
	for _, open := range []func() (component, error){s.openDriverGateway, s.openRiderAPI} {
		c, err := open()
		if err != nil {
			_ = s.store.Close()
			return nil, err
		}
		s.components = append(s.components, c)
	}
	var notifiers dispatch.Notifiers
	for _, c := range s.components {
		notifiers = append(notifiers, c.notify)
	}
	s.engine.Notifier = notifiers
	if err := s.engine.Open(ctx); err != nil {
		_ = s.store.Close()
		return nil, fmt.Errorf("open engine: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		_ = s.store.Close()
		return nil, fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	s.listener = ln
	s.http = &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return s, nil
}

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", s.ready)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
	for _, c := range s.components {
		if c.routes != nil {
			c.routes(mux)
		}
	}
	return mux
}

// ready answers 200 while the region can serve: its store answers.
func (s *server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if _, err := s.store.Fence(ctx, 0); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprintf(w, "store: %v\n", err)
		return
	}
	_, _ = io.WriteString(w, "ready\n")
}

// openStore returns the hot-state Store: Redis with --redis, else in memory.
func openStore(ctx context.Context, cfg Config) (dispatch.Store, error) {
	if cfg.RedisURL == "" {
		return memstore.New(), nil
	}
	st, err := redisstore.Open(ctx, cfg.RedisURL, "understudy:"+cfg.Region+":")
	if err != nil {
		return nil, fmt.Errorf("open redis store: %w", err)
	}
	return st, nil
}

// storeName says which Store runs, for the start-up log.
func (s *server) storeName() string {
	if s.cfg.RedisURL != "" {
		return "redis"
	}
	return "memory"
}

// Addr is the address the server listens on (useful with port 0).
func (s *server) Addr() string { return s.listener.Addr().String() }

// run serves until ctx ends, then shuts down within the configured deadline.
func (s *server) run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.engine.Run(gctx) })
	for _, c := range s.components {
		if c.run != nil {
			g.Go(func() error { return c.run(gctx) })
		}
	}
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
		_ = s.engine.Close()
		var errs []error
		for _, c := range s.components {
			if c.drain != nil {
				if err := c.drain(sctx); err != nil {
					errs = append(errs, fmt.Errorf("drain %s: %w", c.name, err))
				}
			}
		}
		return errors.Join(append(errs, s.http.Shutdown(sctx))...)
	})
	err := g.Wait()
	if cerr := s.store.Close(); err == nil {
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
	log.Info("understudy serving", slog.String("addr", s.Addr()), slog.String("version", version),
		slog.String("data_dir", cfg.DataDir), slog.String("store", s.storeName()), slog.String("region", cfg.Region))
	fmt.Fprintf(stdout, "understudy listening on http://%s\n", s.Addr())
	if ready != nil {
		ready(s)
	}
	return s.run(ctx)
}
