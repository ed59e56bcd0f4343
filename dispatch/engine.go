package dispatch

import (
	"container/heap"
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/understudy/understudy/dispatch/supply"
)

// Engine is one region's dispatcher: it takes ride requests and driver answers, runs
// the matching loop that turns pending requests into offers, and enforces the offer
// cascade and search deadline. State lives in Store; the engine keeps only indexes it
// can rebuild from the Store (the supply index, the pending queue and the timers).
//
// Set the exported fields, call Open, then Run the loop (or call Step from tests with
// an injected clock).
//
// Several engines (replicas of one region) may share a Store: each sends its replica
// events to Peers and takes in the others' with ApplyRemote, and its periodic sweep
// takes over the rides of a replica that died (see docs/architecture.md, Replicas).
type Engine struct {
	Store    Store
	Notifier Notifier     // receives committed changes; nil drops them
	Metrics  Metrics      // nil records nothing
	Logger   *slog.Logger // nil logs nothing
	// Peers receives the replica events (EventSupply, EventDriverConnected,
	// EventDriverAway, EventQueue) that the region's other replicas apply with
	// ApplyRemote; nil sends none, for a lone engine. Notify must not block.
	Peers Notifier
	// Ledger records completed trips for driver pay; nil records none (tests only:
	// serve always sets one).
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
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	supply *supply.Index
	wake   chan struct{}
	seq    sequencer // a driver's events in commit order (sequencer.go)

	// mu guards the pending queue, the timers, the presence map and the sweep's state.
	// It is never held across a Store call or a notification, nor while the supply
	// index's lock is held.
	mu        sync.Mutex
	pending   []string            // rides waiting for an offer, oldest first
	queued    map[string]struct{} // the set of ids in pending
	timers    timerHeap           // offer expiries and search deadlines
	watched   map[timerKey]struct{}
	firstOff  map[string]time.Time
	presence  map[string]presence  // where drivers' apps are, as far as this replica knows
	held      map[string]time.Time // rides other replicas said they queue, when last said
	recheck   map[string]struct{}  // drivers other replicas took out of supply
	nextSweep time.Time
	// unsettled holds rides whose complete or cancel stopped between the ledger and
	// the Store in this process, for Step to finish (engine_pay.go).
	unsettled  map[string]struct{}
	nextSettle time.Time
	closed     bool
}

// Open validates the configuration and rebuilds the engine's indexes from the Store.
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
	e.queued = make(map[string]struct{})
	e.firstOff = make(map[string]time.Time)
	e.watched = make(map[timerKey]struct{})
	e.presence = make(map[string]presence)
	e.held = make(map[string]time.Time)
	e.recheck = make(map[string]struct{})
	e.unsettled = make(map[string]struct{})
	e.nextSweep = e.Now().Add(e.Config.SweepInterval)
	if _, err := e.Store.Fence(ctx, e.Epoch); err != nil {
		return fmt.Errorf("fence store at epoch %d: %w", e.Epoch, err)
	}
	if err := e.restore(ctx); err != nil {
		return err
	}
	if err := e.rebuild(ctx); err != nil {
		return err
	}
	return e.finishInterrupted(ctx)
}

// rebuild refills the supply index, the pending queue and the timers from the Store.
func (e *Engine) rebuild(ctx context.Context) error {
	err := e.Store.Drivers(ctx, func(d Driver) error {
		if d.State == DriverAvailable && d.Location != nil {
			e.supply.Upsert(d.ID, supply.Point(*d.Location))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("rebuild drivers: %w", err)
	}
	err = e.Store.ActiveRides(ctx, func(r Ride) error {
		if r.Status != RideSearching {
			return nil
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		e.watchLocked(timer{at: r.SearchDeadline, rideID: r.ID})
		if r.Offer != nil {
			e.watchLocked(timer{at: r.Offer.ExpiresAt, rideID: r.ID, offerID: r.Offer.ID})
		} else {
			e.enqueueLocked(r.ID)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("rebuild rides: %w", err)
	}
	return nil
}

// Close stops the engine from accepting work; Run returns when its context ends.
func (e *Engine) Close() error {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	return nil
}

// Run is the matching loop: every MatchInterval (or at once after a request, when the
// interval is zero) it expires offers and searches and assigns the pending batch. It
// returns when ctx ends.
func (e *Engine) Run(ctx context.Context) error {
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
		if err := e.Step(ctx); err != nil && ctx.Err() == nil {
			e.Logger.Error("matching step", slog.Any("err", err))
		}
	}
}

// Step runs one round of the loop at the clock's current time: sweep the Store when
// SweepInterval has passed, recheck drivers other replicas took out of supply, finish
// completes and cancels that failed half way (at most every second), revoke
// expired offers (cascading their rides), end searches past their deadline, and
// assign the pending batch. Tests call it directly with a fake clock.
func (e *Engine) Step(ctx context.Context) error {
	now := e.Now()
	var errs []error
	if e.sweepDue(now) {
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
	for _, t := range e.dueTimers(now) {
		if err := e.fire(ctx, t, now); err != nil {
			errs = append(errs, err)
		}
	}
	if err := e.matchPending(ctx, now); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Available is the number of drivers in the supply index.
func (e *Engine) Available() int { return e.supply.Len() }

// Pending is the number of rides waiting for an offer.
func (e *Engine) Pending() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.pending)
}

// retry runs op until it commits without a version conflict (at most maxRetries more
// times). The after func op returns (index updates and notifications, and the release
// of a sequencer slot) always runs, even when op reports an error with it.
func (e *Engine) retry(ctx context.Context, op func(now time.Time) (Ride, func(), error)) (Ride, error) {
	for attempt := 0; ; attempt++ {
		r, after, err := op(e.Now())
		if after != nil {
			after()
		}
		if errors.Is(err, ErrVersionConflict) { // claim counted it
			if attempt < maxRetries && ctx.Err() == nil {
				e.Logger.Debug("commit lost a race: retrying", slog.Int("attempt", attempt+1), slog.Any("err", err))
				continue
			}
			e.Logger.Warn("commit kept losing races with concurrent changes: given up",
				slog.Int("attempts", attempt+1), slog.Any("err", err))
		}
		return r, err
	}
}

// maxRetries is how often retry runs an op again after a version conflict.
const maxRetries = 16

// commit writes tx to the Store and then appends its rides to the durable log, so
// nobody is told of a ride change the log does not hold.
func (e *Engine) commit(ctx context.Context, tx Tx) error {
	if err := e.claim(ctx, tx); err != nil {
		return err
	}
	if e.Log == nil || len(tx.Rides) == 0 {
		return nil
	}
	rides := make([]Ride, len(tx.Rides))
	for i, r := range tx.Rides {
		r.Version++ // as stored
		rides[i] = r
	}
	if err := e.Log.Append(ctx, rides); err != nil {
		return fmt.Errorf("append to the ride log: %w", err)
	}
	return nil
}

// claim writes tx to the Store only. Offers use it: an offer is transient (its outcome
// is what the log records), so the matching loop does not wait on the log.
func (e *Engine) claim(ctx context.Context, tx Tx) error {
	tx.Epoch = e.Epoch
	err := e.Store.Commit(ctx, tx)
	if errors.Is(err, ErrVersionConflict) {
		e.Metrics.Conflict()
	}
	return err
}

// publish tells the ride's followers about r and sends driver events.
func (e *Engine) publish(r Ride, now time.Time, evs ...Event) {
	for _, ev := range evs {
		ev.Ride, ev.At = r, now
		e.Notifier.Notify(ev)
	}
	e.Notifier.Notify(Event{Type: EventRideChanged, Ride: r, At: now})
	if r.Status.Final() {
		e.mu.Lock()
		delete(e.firstOff, r.ID)
		e.mu.Unlock()
	}
}

// makeAvailable puts a driver that just became available into the supply index and,
// with MatchInterval zero, wakes the loop so pending rides can have it at once.
func (e *Engine) makeAvailable(d Driver) {
	if d.State == DriverAvailable && d.Location != nil && !e.isAway(d.ID) {
		e.supplyIn(d.ID, *d.Location)
		e.poke()
	}
}

func (e *Engine) checkOpen() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	return nil
}

func (e *Engine) poke() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *Engine) enqueueLocked(id string) {
	if _, ok := e.queued[id]; ok {
		return
	}
	e.queued[id] = struct{}{}
	e.pending = append(e.pending, id)
}

func (e *Engine) requeue(id string) {
	e.mu.Lock()
	e.enqueueLocked(id)
	e.mu.Unlock()
}

func (e *Engine) takePending() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	ids := e.pending
	e.pending = nil
	clear(e.queued)
	return ids
}

func (e *Engine) dueTimers(now time.Time) []timer {
	e.mu.Lock()
	defer e.mu.Unlock()
	var due []timer
	for len(e.timers) > 0 && !e.timers[0].at.After(now) {
		t := heap.Pop(&e.timers).(timer)
		delete(e.watched, t.key())
		due = append(due, t)
	}
	return due
}

// watchLocked sets timer t unless one for the same offer (or search deadline) is set
// already: the first one set wins, so the replica that made an offer fires its expiry
// on time and the others, which watch it a grace period later, only when it did not.
func (e *Engine) watchLocked(t timer) {
	k := t.key()
	if _, ok := e.watched[k]; ok {
		return
	}
	e.watched[k] = struct{}{}
	heap.Push(&e.timers, t)
}

// timer is an offer expiry (offerID set) or a search deadline.
type timer struct {
	at      time.Time
	rideID  string
	offerID string
}

// timerKey names what a timer is for: one ride's search deadline or one offer's expiry.
type timerKey struct{ rideID, offerID string }

func (t timer) key() timerKey { return timerKey{t.rideID, t.offerID} }

type timerHeap []timer

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h timerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)        { *h = append(*h, x.(timer)) }
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	*h = old[:len(old)-1]
	return t
}

var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// newID returns prefix_ and 16 random base32 characters.
func newID(prefix string) string {
	var b [10]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return prefix + "_" + strings.ToLower(idEncoding.EncodeToString(b[:]))
}
