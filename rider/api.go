// Package rider is the rider HTTP API of the client contract: ride requests with
// idempotency keys, ride status, cancellation, fare estimates and a live
// text/event-stream of each ride's changes. It depends on dispatch only; its Go client
// is rider/client.
package rider

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/httproute"
	"github.com/understudy/understudy/dispatch/memstore"
	"github.com/understudy/understudy/dispatch/problem"
)

// Engine is what the API needs from the dispatcher; dispatch.Riders implements it.
type Engine interface {
	RequestRide(ctx context.Context, riderID string, pickup, dropoff dispatch.Point) (dispatch.Ride, error)
	Ride(ctx context.Context, id string) (dispatch.Ride, error)
	CancelRide(ctx context.Context, id string) (dispatch.Ride, error)
	Estimate(pickup, dropoff dispatch.Point) (dispatch.Estimate, error)
	Driver(ctx context.Context, id string) (dispatch.Driver, error)
}

var (
	_ Engine            = dispatch.Riders{}
	_ dispatch.Notifier = (*API)(nil)
)

// API serves the rider routes. Set the exported fields, Open it, mount its Routes,
// feed it the engine's events (it is a dispatch.Notifier); at shutdown Drain it, then
// Close it.
type API struct {
	Engine      Engine
	Verifier    dispatch.Verifier
	Idempotency dispatch.IdempotencyStore
	Logger      *slog.Logger // nil logs nothing
	Metrics     *Metrics     // nil records nothing
	Config      Config
	// Limiter holds the per-caller rate limits: Redis, shared by replicas, or one
	// in-process limiter that the server shares with its other HTTP routes. Nil
	// makes one in this process for the API alone.
	Limiter dispatch.RateLimiter
	// Now is the clock of the in-process rate limits Open makes; nil means time.Now.
	Now func() time.Time
	// AllowedOrigins lists the Origins whose browser pages may call the API (CORS;
	// "*" for any): the same list as the driver socket's. Empty allows none.
	AllowedOrigins []string

	hub    *hub
	cancel context.CancelFunc // stops what Open started
	g      errgroup.Group
}

// Open checks the dependencies and configuration, prepares the API and starts its
// housekeeping, which runs until Close.
func (a *API) Open(ctx context.Context) error {
	var errs []error
	if a.Engine == nil {
		errs = append(errs, errors.New("rider: API needs an Engine"))
	}
	if a.Verifier == nil {
		errs = append(errs, errors.New("rider: API needs a Verifier"))
	}
	if a.Idempotency == nil {
		errs = append(errs, errors.New("rider: API needs an IdempotencyStore"))
	}
	if err := a.Config.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if a.Logger == nil {
		a.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if a.Now == nil {
		a.Now = time.Now
	}
	a.hub = newHub(a.Config.SubscriberBuffer, a.Config.MaxStreamsPerRider, a.Metrics)
	if a.Limiter == nil {
		l := memstore.NewRateLimiter(a.Config.Rate, a.Config.Burst)
		l.Now = a.Now
		a.Limiter = l
	}
	var run context.Context
	run, a.cancel = context.WithCancel(context.Background())
	a.g.Go(func() error { return a.sweepEvery(run, a.Config.SweepInterval) })
	return nil
}

// Routes lists what the API serves: its five routes, and OPTIONS on each of their
// paths for CORS preflights.
func (a *API) Routes() []httproute.Route {
	routes := []httproute.Route{
		a.route(http.MethodPost, pathRides, a.requestRide),
		a.route(http.MethodGet, "/v1/rides/{id}", a.getRide),
		a.route(http.MethodPost, "/v1/rides/{id}/cancel", a.cancelRide),
		a.route(http.MethodGet, pathRideEvents, a.rideEvents),
		a.route(http.MethodPost, "/v1/estimates", a.estimate),
	}
	var (
		paths   []string
		methods = map[string][]string{}
	)
	for _, r := range routes {
		if methods[r.Path] == nil {
			paths = append(paths, r.Path)
		}
		methods[r.Path] = append(methods[r.Path], r.Method)
	}
	for _, p := range paths {
		routes = append(routes, httproute.Route{Method: http.MethodOptions, Path: p, Handler: a.options(methods[p])})
	}
	return routes
}

// Paths the API's code refers to.
const (
	pathRides      = "/v1/rides"             // a ride request's fingerprint holds it
	pathRideEvents = "/v1/rides/{id}/events" // the one streaming route
)

// Handler serves only the API's routes, for tests and embedding; unknown paths and
// methods are answered as problems too.
func (a *API) Handler() http.Handler {
	return problem.Routes(httproute.NewMux(a.Routes()...))
}

// sweepEvery frees refilled in-process rate limits and expired idempotency keys every
// interval until ctx ends.
func (a *API) sweepEvery(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			a.sweep()
		}
	}
}

func (a *API) sweep() {
	if s, ok := a.Limiter.(interface{ Sweep() int }); ok {
		s.Sweep()
	}
	if s, ok := a.Idempotency.(interface{ Sweep() int }); ok {
		if n := s.Sweep(); n > 0 {
			a.Logger.Debug("expired idempotency keys", slog.Int("count", n))
		}
	}
}

// Drain ends every event stream (clients reconnect, elsewhere if this region is
// going away) and refuses new ones; it returns when the streams have ended or ctx
// ends.
func (a *API) Drain(ctx context.Context) error {
	return a.hub.close(ctx)
}

// Close stops the API's housekeeping and waits for it. Streams still open are told to
// end, without waiting (Drain waits).
func (a *API) Close() error {
	if a.cancel == nil { // never opened
		return nil
	}
	a.cancel()
	err := a.g.Wait()
	done, cancel := context.WithCancel(context.Background())
	cancel()
	_ = a.hub.close(done)
	return err
}

// Notify implements dispatch.Notifier: every event carrying a ride goes to that
// ride's event streams. It never blocks.
func (a *API) Notify(ev dispatch.Event) {
	switch {
	case ev.Ride.ID == "":
	case ev.Type == dispatch.EventAreaMoved:
		a.hub.move(ev.Ride.ID)
	default:
		a.hub.publish(ev.Ride)
	}
}
