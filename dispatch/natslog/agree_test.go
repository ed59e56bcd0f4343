package natslog_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/memstore"
	"github.com/understudy/understudy/dispatch/natslog"
)

// The tests in this file hold the pay ledger and the rides together through the
// failures between their writes: an engine on the real JetStream ride log and ledger,
// with one write made to fail (as a timeout, a closed socket or a blip of Redis does),
// then, where it matters, a crash of the embedded default: the in-memory Store is lost
// and a new engine starts from the log and the ledger.

var errInjected = errors.New("injected failure")

// faultyLog loses the next append that holds a ride in status fail.
type faultyLog struct {
	dispatch.RideLog
	mu   sync.Mutex
	fail dispatch.RideStatus
}

func (l *faultyLog) Append(ctx context.Context, rides []dispatch.Ride) error {
	l.mu.Lock()
	for _, r := range rides {
		if l.fail != "" && r.Status == l.fail {
			l.fail = ""
			l.mu.Unlock()
			return errInjected
		}
	}
	l.mu.Unlock()
	return l.RideLog.Append(ctx, rides)
}

// faultyLedger fails the next fail records without writing them.
type faultyLedger struct {
	dispatch.Ledger
	fail atomic.Int32
}

func (l *faultyLedger) Record(ctx context.Context, e dispatch.LedgerEntry) (dispatch.LedgerEntry, error) {
	if l.fail.Add(-1) >= 0 {
		return dispatch.LedgerEntry{}, errInjected
	}
	return l.Ledger.Record(ctx, e)
}

// faultyStore fails, without committing, the next commit that puts a ride in status fail.
type faultyStore struct {
	dispatch.Store
	mu   sync.Mutex
	fail dispatch.RideStatus
}

func (s *faultyStore) Commit(ctx context.Context, tx dispatch.Tx) error {
	s.mu.Lock()
	for _, r := range tx.Rides {
		if s.fail != "" && r.Status == s.fail {
			s.fail = ""
			s.mu.Unlock()
			return errInjected
		}
	}
	s.mu.Unlock()
	return s.Store.Commit(ctx, tx)
}

// payWorld is one region's durable parts on an embedded JetStream.
type payWorld struct {
	nc     *nats.Conn
	log    *natslog.RideLog
	ledger *natslog.Ledger
	now    time.Time
	fee    func(*dispatch.Config)
}

func openPayWorld(tb testing.TB) *payWorld {
	tb.Helper()
	w := &payWorld{now: time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)}
	nc, stop := mustConnect(tb, tb.TempDir())
	tb.Cleanup(stop)
	w.nc = nc
	var err error
	ctx := context.Background()
	if w.log, err = natslog.OpenRideLog(ctx, w.nc, "seoul", 1); err != nil {
		tb.Fatal(err)
	}
	if w.ledger, err = natslog.OpenLedger(ctx, w.nc, 1); err != nil {
		tb.Fatal(err)
	}
	return w
}

func (w *payWorld) clock() time.Time { return w.now }

// start opens an engine on a new in-memory Store (after a crash, the embedded default
// starts with nothing but the log and the ledger) and the given log, ledger and store
// wrappers (nil for the real ones).
func (w *payWorld) start(tb testing.TB, log dispatch.RideLog, ledger dispatch.Ledger, store dispatch.Store) *dispatch.Engine {
	tb.Helper()
	if log == nil {
		log = w.log
	}
	if ledger == nil {
		ledger = w.ledger
	}
	if store == nil {
		store = memstore.New()
	}
	cfg := dispatch.DefaultConfig()
	cfg.MatchInterval = 0
	if w.fee != nil {
		w.fee(&cfg)
	}
	e := &dispatch.Engine{Store: store, Log: log, Ledger: ledger, Region: "seoul", Config: cfg, Now: w.clock, Stepped: true}
	if err := e.Open(context.Background()); err != nil {
		tb.Fatalf("open engine: %v", err)
	}
	return e
}

// assigned brings a ride for rider u-1 to driver d-1 and through steps ("arrived", "start").
func (w *payWorld) assigned(tb testing.TB, e *dispatch.Engine, steps ...string) string {
	tb.Helper()
	ctx := context.Background()
	gangnam := dispatch.Point{Lat: 37.4979, Lng: 127.0276}
	if _, err := e.Drivers().Connect(ctx, "d-1"); err != nil {
		tb.Fatal(err)
	}
	if err := e.Drivers().UpdateLocation(ctx, "d-1", gangnam); err != nil {
		tb.Fatal(err)
	}
	if _, err := e.Drivers().SetAvailable(ctx, "d-1"); err != nil {
		tb.Fatal(err)
	}
	r, err := e.Riders().RequestRide(ctx, "u-1", gangnam, dispatch.Point{Lat: 37.5547, Lng: 126.9707})
	if err != nil {
		tb.Fatal(err)
	}
	if err := e.Step(ctx); err != nil {
		tb.Fatal(err)
	}
	d, err := e.Riders().Driver(ctx, "d-1")
	if err != nil || d.OfferID == "" {
		tb.Fatalf("d-1 has no offer: %+v %v", d, err)
	}
	if _, err := e.Drivers().Accept(ctx, "d-1", d.OfferID); err != nil {
		tb.Fatal(err)
	}
	for _, s := range steps {
		step := map[string]func(context.Context, string, string) (dispatch.Ride, error){"arrived": e.Drivers().Arrived, "start": e.Drivers().Start}[s]
		if _, err := step(ctx, "d-1", r.ID); err != nil {
			tb.Fatalf("%s: %v", s, err)
		}
	}
	return r.ID
}

// agree checks that ride id, as the Store has it, and the ledger say the same: a
// completed ride has one trip entry, a ride cancelled after its driver arrived one fee
// entry (when feeDue), any other ride none. It returns the ride's status.
func (w *payWorld) agree(tb testing.TB, e *dispatch.Engine, id string, feeDue bool) dispatch.RideStatus {
	tb.Helper()
	r, err := e.Riders().Ride(context.Background(), id)
	if err != nil {
		tb.Fatal(err)
	}
	var entries []dispatch.LedgerEntry
	err = w.ledger.Entries(context.Background(), time.Time{}, "", func(le dispatch.LedgerEntry) error {
		if le.RideID == id {
			entries = append(entries, le)
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	want := 0
	if r.Status == dispatch.RideCompleted || (r.Status == dispatch.RideCancelled && feeDue) {
		want = 1
	}
	if len(entries) != want {
		tb.Errorf("ride %s is %s with %d ledger entries, want %d: %+v", id, r.Status, len(entries), want, entries)
	}
	return r.Status
}

// Complete's writes are the ledger entry, the Store commit and the ride log; each can
// fail (or the process crash) after the one before. Whatever fails, once the process
// has carried on for a second or restarted, the ledger pays no ride that the rides do
// not show completed and misses none that they do. (Between the entry and the commit
// the trip is in progress with its entry: it will be completed, as nothing else can
// end a trip in progress.)
func TestLedgerAgreesWithRidesThroughFailures(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name string
		// fail arranges the failure on the first engine's wrappers.
		fail func(*faultyLog, *faultyLedger, *faultyStore)
		// retry: the driver sends complete again on the same process; step: the
		// process carries on (Step after a second); crash: it is killed.
		retry, step, crash bool
		want               dispatch.RideStatus // after all that, before any other step
	}{
		{name: "the log missed the completion, the driver retried, then a crash",
			fail:  func(l *faultyLog, _ *faultyLedger, _ *faultyStore) { l.fail = dispatch.RideCompleted },
			retry: true, crash: true, want: dispatch.RideCompleted},
		{name: "the log missed the completion, nobody retried, then a crash",
			fail:  func(l *faultyLog, _ *faultyLedger, _ *faultyStore) { l.fail = dispatch.RideCompleted },
			crash: true, want: dispatch.RideCompleted},
		{name: "the ledger write failed, nobody retried, then a crash",
			fail:  func(_ *faultyLog, l *faultyLedger, _ *faultyStore) { l.fail.Store(1) },
			crash: true, want: dispatch.RideInProgress},
		{name: "the Store commit failed, nobody retried, the process carried on",
			fail: func(_ *faultyLog, _ *faultyLedger, s *faultyStore) { s.fail = dispatch.RideCompleted },
			step: true, want: dispatch.RideCompleted},
		{name: "the Store commit failed, nobody retried, then a crash",
			fail:  func(_ *faultyLog, _ *faultyLedger, s *faultyStore) { s.fail = dispatch.RideCompleted },
			crash: true, want: dispatch.RideCompleted},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := openPayWorld(t)
			log, ledger, store := &faultyLog{RideLog: w.log}, &faultyLedger{Ledger: w.ledger}, &faultyStore{Store: memstore.New()}
			e := w.start(t, log, ledger, store)
			id := w.assigned(t, e, "arrived", "start")
			c.fail(log, ledger, store)
			if _, err := e.Drivers().Complete(ctx, "d-1", id); !errors.Is(err, errInjected) {
				t.Fatalf("complete: %v, want the injected failure", err)
			}
			if c.retry {
				if r, err := e.Drivers().Complete(ctx, "d-1", id); err != nil || r.Status != dispatch.RideCompleted {
					t.Fatalf("retried complete: %+v %v", r, err)
				}
			}
			if c.step {
				w.now = w.now.Add(2 * time.Second)
				if err := e.Step(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if c.crash {
				e = w.start(t, nil, nil, nil)
			}
			if got := w.agree(t, e, id, false); got != c.want {
				t.Fatalf("ride is %s, want %s", got, c.want)
			}
			if got := w.agree(t, e, id, false); got == dispatch.RideInProgress {
				// The driver, who was told complete failed, completes again: paid once.
				if r, err := e.Drivers().Complete(ctx, "d-1", id); err != nil || r.Status != dispatch.RideCompleted {
					t.Fatalf("complete after the failure: %+v %v", r, err)
				}
				w.agree(t, e, id, false)
			}
		})
	}
}

// A cancel after the driver arrived writes the claim on the ride, the fee and the
// cancel; each can fail. The fee is paid once, exactly for the rides that end
// cancelled after the arrival, and a start racing the cancel either wins (no fee, the
// trip goes on) or loses.
func TestCancellationFeeAgreesWithRidesThroughFailures(t *testing.T) {
	ctx := context.Background()
	withFee := func(c *dispatch.Config) { c.Fare.CancellationFee = 2500 }
	for _, c := range []struct {
		name        string
		fail        func(*faultyLedger, *faultyStore)
		step, crash bool
	}{
		{name: "the fee's write failed, then a crash", fail: func(l *faultyLedger, _ *faultyStore) { l.fail.Store(1) }, crash: true},
		{name: "the fee's write failed, the process carried on", fail: func(l *faultyLedger, _ *faultyStore) { l.fail.Store(1) }, step: true},
		{name: "the cancel's commit failed after the fee, then a crash",
			fail: func(_ *faultyLedger, s *faultyStore) { s.fail = dispatch.RideCancelled }, crash: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := openPayWorld(t)
			w.fee = withFee
			ledger, store := &faultyLedger{Ledger: w.ledger}, &faultyStore{Store: memstore.New()}
			e := w.start(t, nil, ledger, store)
			id := w.assigned(t, e, "arrived")
			c.fail(ledger, store)
			if _, err := e.Riders().CancelRide(ctx, id); !errors.Is(err, errInjected) {
				t.Fatalf("cancel: %v, want the injected failure", err)
			}
			// The driver cannot start a ride its rider cancelled, even half way.
			if _, err := e.Drivers().Start(ctx, "d-1", id); !errors.Is(err, dispatch.ErrIllegalTransition) {
				t.Fatalf("start after the cancel: %v, want refused", err)
			}
			if c.step {
				w.now = w.now.Add(2 * time.Second)
				if err := e.Step(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if c.crash {
				e = w.start(t, nil, nil, nil)
			}
			if got := w.agree(t, e, id, true); got != dispatch.RideCancelled {
				t.Fatalf("ride is %s, want cancelled", got)
			}
			if d, err := e.Riders().Driver(ctx, "d-1"); err != nil || d.RideID == id {
				t.Fatalf("driver after the cancel: %+v %v, want freed", d, err)
			}
			if r, err := e.Riders().CancelRide(ctx, id); err != nil || r.Status != dispatch.RideCancelled { // the rider's retry
				t.Fatalf("retried cancel: %+v %v", r, err)
			}
			w.agree(t, e, id, true)
		})
	}

	t.Run("start races cancel", func(t *testing.T) {
		w := openPayWorld(t)
		w.fee = withFee
		e := w.start(t, nil, nil, nil)
		won := map[dispatch.RideStatus]int{}
		for range 20 {
			id := w.assigned(t, e, "arrived")
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { defer wg.Done(); _, _ = e.Drivers().Start(ctx, "d-1", id) }()
			go func() { defer wg.Done(); _, _ = e.Riders().CancelRide(ctx, id) }()
			wg.Wait()
			status := w.agree(t, e, id, true)
			won[status]++
			switch status {
			case dispatch.RideInProgress:
				if _, err := e.Drivers().Complete(ctx, "d-1", id); err != nil {
					t.Fatal(err)
				}
				w.agree(t, e, id, true)
			case dispatch.RideCancelled:
			default:
				t.Fatalf("after start and cancel the ride is %s", status)
			}
		}
		t.Logf("outcomes of 20 races: %v", won)
	})
}
