package dispatch

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/understudy/understudy/dispatch/supply"
)

// Engine is one region's dispatcher: it takes ride requests and driver answers, runs
// the matching loop that turns pending requests into offers, and enforces the offer
// cascade and search deadline. State lives in Store; the engine keeps only indexes it
// can rebuild from the Store (the supply index, the matcher's queue and the timers).
//
// Its lifecycle is every component's: set the exported fields, Open it (which starts
// the matching loop), Drain it at shutdown (no new rides, the loop stops), Close it
// (waits for the loop). Between Open and Close the rider API calls Riders, the driver
// gateway Drivers and the replicas' bus Replicas. Tests that drive the loop by hand,
// with an injected clock, set Stepped and call Step.
//
// Every change of a driver or ride goes one way (change.go): an operation reads the
// Store and returns the change it wants, and Engine.apply commits it (with the
// writer's fencing epoch: where an area's lease is checked), logs it, tells the
// clients and brings the indexes in step.
//
// Several engines (replicas of one region) may share a Store: each sends its replica
// events to Peers and takes in the others' through Replicas, and its periodic sweep
// takes over the rides of a replica that died (see docs/architecture.md, Replicas).
//
// Locks: each part (matcher, timers, replicas, settler, supply index) has its own
// mutex, a leaf: none is held while another is taken, nor across a Store call or a
// notification. The one lock held across a commit is a driver's sequencer slot
// (sequencer.go), taken before any of those.
type Engine struct {
	Store Store
	// Notifier receives committed changes for this process's clients (the driver
	// gateway, the rider API); nil drops them. Notify must not block.
	Notifier Notifier
	Metrics  Metrics      // nil records nothing
	Logger   *slog.Logger // nil logs nothing
	// Peers carries this replica's events to the region's other replicas, which take
	// them in through Replicas; nil, for a lone engine, sends none.
	Peers Peers
	// Ledger records completed trips and cancellation fees for driver pay; nil records
	// none (tests only: serve always sets one).
	Ledger Ledger
	// Log durably records every ride change except offers before anyone hears of it,
	// and restores active rides into an empty Store; nil keeps no log (tests only).
	Log RideLog
	// Region names this region in ledger entries.
	Region string
	Config Config
	// Epoch is this writer's fencing epoch; every commit carries it. A lone region
	// uses 1; regional takeover sets it from the lease revision.
	Epoch uint64
	// Router says which pickups and driver locations this region serves; nil serves
	// everywhere (one region, no deployment file).
	Router *Router
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Stepped says the caller drives the loop with Step (tests, with an injected
	// clock): Open then starts no goroutine.
	Stepped bool

	supply   *supply.Index
	matcher  matcher   // rides waiting for an offer (matcher.go)
	timers   timers    // offer expiries and search deadlines (timers.go)
	replicas replicas  // where drivers' apps are, and the sweep (replicas.go, sweep.go)
	seq      sequencer // a driver's events in commit order (sequencer.go)
	settler  settler   // completes and cancels that stopped half way (pay.go)
	steps    steps     // trip steps in flight (trips.go)
	wake     chan struct{}
	// generation is the Store's Generation as last seen (refillLostStore).
	generation string
	closed     atomic.Bool
	stop       context.CancelFunc // ends the loop Open started
	loop       errgroup.Group
	stopped    sync.Once
	loopErr    error
}

// Open validates the configuration and rebuilds the engine's indexes from the Store
// (refilling an empty Store from the ride log first).
func (e *Engine) Open(ctx context.Context) error {
	if e.Store == nil {
		return errors.New("dispatch: engine needs a Store")
	}
	if err := e.Config.Validate(); err != nil {
		return fmt.Errorf("dispatch config: %w", err)
	}
	if e.Epoch == 0 {
		e.Epoch = 1
	}
	if e.Now == nil {
		e.Now = time.Now
	}
	if e.Logger == nil {
		e.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if e.Metrics == nil {
		e.Metrics = nopMetrics{}
	}
	if e.Notifier == nil {
		e.Notifier = Notifiers(nil)
	}
	e.supply = supply.New(e.Config.H3Resolution)
	e.wake = make(chan struct{}, 1)
	e.replicas.nextSweep = e.Now().Add(e.Config.SweepInterval)
	if _, err := e.Store.Fence(ctx, e.Epoch); err != nil {
		return fmt.Errorf("fence store at epoch %d: %w", e.Epoch, err)
	}
	if err := e.restore(ctx); err != nil {
		return err
	}
	if err := e.rebuild(ctx); err != nil {
		return err
	}
	if err := e.finishInterrupted(ctx); err != nil {
		return err
	}
	if err := e.refillLostStore(ctx); err != nil { // notes the Store's generation
		return err
	}
	if !e.Stepped {
		run, stop := context.WithCancel(context.Background())
		e.stop = stop
		e.loop.Go(func() error { return e.run(run) })
	}
	return nil
}

// Drain is the first step of shutdown: the engine takes no new ride requests and its
// matching loop stops; drivers' answers and trip steps still go through until the
// gateway has drained.
func (e *Engine) Drain(context.Context) error {
	e.closed.Store(true)
	return e.stopLoop()
}

// Close stops what Drain stops, if Drain did not, and waits for the loop and for the
// trip steps in flight (for stepsGrace, then it ends them).
func (e *Engine) Close() error {
	e.closed.Store(true)
	err := e.stopLoop()
	e.steps.close()
	return err
}

func (e *Engine) stopLoop() error {
	e.stopped.Do(func() {
		if e.stop != nil {
			e.stop()
			e.loopErr = e.loop.Wait()
		}
	})
	return e.loopErr
}

// run is the matching loop: every MatchInterval (or at once after a request, when the
// interval is zero) it takes a step. It returns when ctx ends.
func (e *Engine) run(ctx context.Context) error {
	interval := e.Config.MatchInterval
	housekeeping := interval
	if housekeeping == 0 {
		housekeeping = 100 * time.Millisecond
	}
	t := time.NewTicker(housekeeping)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-e.wake:
			if interval > 0 {
				continue // batch until the tick
			}
		}
		if err := e.step(ctx); err != nil && ctx.Err() == nil {
			e.Logger.Error("matching step", slog.Any("err", err))
		}
	}
}

// Step runs one round of the loop at the clock's current time: sweep the Store when
// SweepInterval has passed, recheck drivers other replicas took out of supply, finish
// completes and cancels that failed half way (at most every second), revoke expired
// offers (cascading their rides), end searches past their deadline, and assign the
// pending batch. Tests of a Stepped engine call it with a fake clock; the loop Open
// starts calls it otherwise.
func (e *Engine) Step(ctx context.Context) error {
	if !e.Stepped {
		return errors.New("dispatch: Step on an engine that runs its own loop (set Stepped)")
	}
	return e.step(ctx)
}

func (e *Engine) step(ctx context.Context) error {
	now := e.Now()
	var errs []error
	if e.replicas.sweepDue(now, e.Config.SweepInterval) {
		if err := e.refillLostStore(ctx); err != nil {
			errs = append(errs, err)
		}
		if err := e.sweep(ctx, now); err != nil {
			errs = append(errs, err)
		}
	}
	if err := e.recheckSupply(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := e.finishUnsettled(ctx, now); err != nil {
		errs = append(errs, err)
	}
	for _, t := range e.timers.due(now) {
		if err := e.fire(ctx, t); err != nil {
			errs = append(errs, err)
		}
	}
	if err := e.matchPending(ctx, now); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Riders is the engine as the rider API uses it (rides.go).
func (e *Engine) Riders() Riders { return Riders{e} }

// Drivers is the engine as the driver gateway uses it (drivers.go, offers.go,
// trips.go).
func (e *Engine) Drivers() Drivers { return Drivers{e} }

// Replicas is the engine as the region's bus uses it (replicas.go).
func (e *Engine) Replicas() Replicas { return Replicas{e} }

// Available is the number of drivers in the supply index.
func (e *Engine) Available() int { return e.supply.Len() }

// Pending is the number of rides waiting for an offer.
func (e *Engine) Pending() int { return e.matcher.len() }

// poke wakes the loop (with MatchInterval zero, to match at once).
func (e *Engine) poke() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// newID returns prefix_ and 16 random base32 characters.
func newID(prefix string) string {
	var b [10]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return prefix + "_" + strings.ToLower(idEncoding.EncodeToString(b[:]))
}
