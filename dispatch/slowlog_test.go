package dispatch_test

import (
	"context"
	"testing"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
)

// slowLog is memLog answering each append only after delay, as JetStream does under
// overload: longer than a driver frame's deadline.
type slowLog struct {
	*memLog
	delay time.Duration
}

func (l *slowLog) Append(ctx context.Context, rides []dispatch.Ride) error {
	select {
	case <-time.After(l.delay):
	case <-ctx.Done():
		return ctx.Err()
	}
	return l.memLog.Append(ctx, rides)
}

// tripOverASlowLog starts d-1 on a trip, then gives the engine a ride log that
// answers each append in 300 ms; the events so far are taken.
func tripOverASlowLog(t *testing.T) (*testEngine, dispatch.Ride, *slowLog) {
	t.Helper()
	te := mustOpenEngine(t, nil)
	te.online(t, "d-1", near(gangnam, 100, 0))
	r := te.request(t, gangnam)
	te.step(t)
	if _, err := te.Drivers().Accept(context.Background(), "d-1", te.offerTo(t, "d-1").ID); err != nil {
		t.Fatal(err)
	}
	te.mustStart(t, "d-1", r.ID)
	te.rec.take(dispatch.EventRideChanged, "")
	log := &slowLog{memLog: &memLog{latest: map[string]dispatch.Ride{}, seen: map[string]bool{}}, delay: 300 * time.Millisecond}
	te.Log = log
	return te, r, log
}

// A complete whose ride log append takes longer than the driver frame's deadline, as
// under the 200 rides/s overload: the frame hears unavailable (retry), not internal;
// the step carries on after the frame gave up, and a retry of complete succeeds.
// Before, each retry began the step anew and gave up at the same point (a retried
// complete of a ride committed completed re-appends it, which took as long), so the
// driver's complete never succeeded while the log was that slow, and the rider never
// heard the ride end.
func TestCompleteOutlastsASlowRideLog(t *testing.T) {
	te, r, log := tripOverASlowLog(t)
	ctx := context.Background()
	tries := 0
	done := dispatchtest.Await(t, func() (dispatch.Ride, error) {
		tries++
		fctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond) // a frame's deadline, shorter than the log
		defer cancel()
		got, err := te.Drivers().Complete(fctx, "d-1", r.ID)
		if err != nil {
			if code := dispatch.ErrorCode(err); code != dispatch.ECodeUnavailable || dispatch.RetryAfter(err) == 0 {
				t.Fatalf("complete, try %d: code %q, %v; want unavailable with Retry-After, a retryable refusal", tries, code, err)
			}
		}
		return got, err
	})
	if done.Status != dispatch.RideCompleted || tries < 2 {
		t.Fatalf("complete answered %s after %d tries; want completed after at least one unavailable", done.Status, tries)
	}
	log.mu.Lock()
	logged := log.latest[r.ID]
	log.mu.Unlock()
	if logged.Status != dispatch.RideCompleted {
		t.Fatalf("ride log holds %s; want completed", logged.Status)
	}
	heard := false
	for _, ev := range te.rec.take(dispatch.EventRideChanged, "") {
		heard = heard || ev.Ride.Status == dispatch.RideCompleted
	}
	if !heard {
		t.Fatal("no ride_changed to completed: the rider never heard the ride end")
	}
	d, err := te.Store.Driver(ctx, "d-1")
	if err != nil || d.State != dispatch.DriverAvailable {
		t.Fatalf("driver after the complete: %+v, %v; want available", d, err)
	}
}

// Close lets a trip step that outlived its frame finish (for a grace period) before
// it returns: a complete the driver was told to send again is stored, not cut off.
func TestCloseWaitsForTripStepsInFlight(t *testing.T) {
	te, r, log := tripOverASlowLog(t)
	ctx := context.Background()
	fctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if _, err := te.Drivers().Complete(fctx, "d-1", r.ID); dispatch.ErrorCode(err) != dispatch.ECodeUnavailable {
		t.Fatalf("complete with a 10 ms deadline over a 300 ms log: %v, want unavailable", err)
	}
	if err := te.Close(); err != nil {
		t.Fatal(err)
	}
	log.mu.Lock()
	logged := log.latest[r.ID]
	log.mu.Unlock()
	if logged.Status != dispatch.RideCompleted {
		t.Fatalf("after Close the ride log holds %q; want completed (Close waits for the step)", logged.Status)
	}
}
