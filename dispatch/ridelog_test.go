package dispatch_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/memstore"
)

// memLog is a dispatch.RideLog in memory that, like the JetStream log, drops an
// append whose ride and version it already holds.
type memLog struct {
	mu     sync.Mutex
	latest map[string]dispatch.Ride
	seen   map[string]bool // ride/version appended
	drops  int             // appends dropped as duplicates
}

func (l *memLog) Append(_ context.Context, rides []dispatch.Ride) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range rides {
		id := fmt.Sprintf("%s/%d", r.ID, r.Version)
		if l.seen[id] {
			l.drops++
			continue
		}
		l.seen[id] = true
		l.latest[r.ID] = r
	}
	return nil
}

func (l *memLog) LatestIn(ctx context.Context, area string, fn func(dispatch.Ride) error) error {
	return l.Latest(ctx, func(r dispatch.Ride) error {
		if r.Area != area {
			return nil
		}
		return fn(r)
	})
}

func (l *memLog) Latest(_ context.Context, fn func(dispatch.Ride) error) error {
	l.mu.Lock()
	rides := make([]dispatch.Ride, 0, len(l.latest))
	for _, r := range l.latest {
		rides = append(rides, r)
	}
	l.mu.Unlock()
	slices.SortFunc(rides, func(a, b dispatch.Ride) int { return int(a.Version) - int(b.Version) })
	for _, r := range rides {
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

// A restore from the log puts each ride back at its logged version, and versions
// grow on from there: nothing a rider was told is numbered again.
func TestRestoreKeepsVersions(t *testing.T) {
	ctx := context.Background()
	log := &memLog{latest: map[string]dispatch.Ride{}, seen: map[string]bool{}}
	first := mustOpenEngine(t, nil)
	first.Log = log

	first.online(t, "d-1", near(gangnam, 100, 0))
	declined := first.request(t, gangnam)
	first.step(t)
	if err := first.Drivers().Decline(ctx, "d-1", first.offerTo(t, "d-1").ID); err != nil {
		t.Fatal(err)
	}
	searching := first.rideStatus(t, declined.ID, dispatch.RideSearching)
	first.online(t, "d-2", near(gangnam, 200, 0))
	first.step(t)
	if _, err := first.Drivers().Accept(ctx, "d-2", first.offerTo(t, "d-2").ID); err != nil {
		t.Fatal(err)
	}
	done, err := first.Drivers().Complete(ctx, "d-2", first.mustStart(t, "d-2", declined.ID).ID)
	if err != nil {
		t.Fatal(err)
	}
	// A second ride, matched, with a driver on the way.
	first.online(t, "d-3", near(gangnam, 10, 0))
	active := first.request(t, gangnam)
	first.step(t)
	matched, err := first.Drivers().Accept(ctx, "d-3", first.offerTo(t, "d-3").ID)
	if err != nil {
		t.Fatal(err)
	}
	if searching.Version < 3 || done.Version <= searching.Version {
		t.Fatalf("versions before the restore: searching %d, completed %d", searching.Version, done.Version)
	}

	// The process dies with its in-memory store; a new one starts on the same log.
	second := &testEngine{clock: first.clock, rec: &recorder{}, store: memstore.New()}
	second.Engine = &dispatch.Engine{Store: second.store, Notifier: second.rec, Config: first.Config, Now: second.clock.Now, Log: log, Stepped: true}
	if err := second.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = second.Close() })
	if got := second.rideStatus(t, done.ID, dispatch.RideCompleted); got.Version != done.Version {
		t.Fatalf("completed ride restored at version %d, want %d", got.Version, done.Version)
	}
	if got := second.rideStatus(t, active.ID, dispatch.RideMatched); got.Version != matched.Version || got.DriverID != "d-3" {
		t.Fatalf("matched ride restored as %+v, want version %d with d-3", got, matched.Version)
	}
	second.driverState(t, "d-3", dispatch.DriverEnRoute)
	arrived, err := second.Drivers().Arrived(ctx, "d-3", active.ID)
	if err != nil {
		t.Fatal(err)
	}
	if arrived.Version != matched.Version+1 {
		t.Fatalf("first change after the restore at version %d, want %d", arrived.Version, matched.Version+1)
	}
	if log.drops != 0 {
		t.Fatalf("the log dropped %d appends as duplicates of earlier versions", log.drops)
	}
	if got := log.latest[active.ID]; got.Status != dispatch.RideArrived {
		t.Fatalf("the log holds the ride as %s, want arrived", got.Status)
	}
}

// mustStart takes driverID's ride rideID from matched to in_progress.
func (te *testEngine) mustStart(tb testing.TB, driverID, rideID string) dispatch.Ride {
	tb.Helper()
	ctx := context.Background()
	if _, err := te.Drivers().Arrived(ctx, driverID, rideID); err != nil {
		tb.Fatal(err)
	}
	r, err := te.Drivers().Start(ctx, driverID, rideID)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}
