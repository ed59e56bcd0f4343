package dispatch

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"
)

// peerGrace is how long after an offer's expiry or a search's deadline a replica that
// did not set that timer waits before acting on it: the replica that did goes first,
// and the others only step in when it did not (it died). Acting twice is harmless (the
// second commit finds the ride changed), this only saves the work.
const peerGrace = 250 * time.Millisecond

// sweepDue reports whether the sweep is due at now and, if so, schedules the next one.
func (e *Engine) sweepDue(now time.Time) bool {
	if e.Config.SweepInterval <= 0 {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if now.Before(e.nextSweep) {
		return false
	}
	e.nextSweep = now.Add(e.Config.SweepInterval)
	return true
}

// orphanAfter is how long a searching ride without an offer must have gone unchanged,
// and unclaimed by any replica's EventQueue, before the sweep adopts it: two sweeps,
// so that one late announcement does not make two replicas search for it.
func (e *Engine) orphanAfter() time.Duration { return 2 * e.Config.SweepInterval }

// sweep reads every active ride from the Store and takes over what nobody handles.
// Each replica's timers and queue cover the rides it touched; the sweep covers the
// rides of a replica that died:
//   - an outstanding offer gets an expiry timer at ExpiresAt plus peerGrace, and a
//     searching ride a deadline timer at SearchDeadline plus peerGrace (already due
//     ones fire in this Step);
//   - a searching ride without an offer that is in no replica's queue (none announced
//     it within orphanAfter, and it has not changed for as long) joins this one's.
//
// Then it announces this replica's queue (EventQueue) to the others. Several replicas
// sweeping at once is safe: whatever they then do is a versioned commit, and only one
// commit per ride version wins.
func (e *Engine) sweep(ctx context.Context, now time.Time) error {
	orphanAfter := e.orphanAfter()
	var adopted []string
	err := e.Store.ActiveRides(ctx, func(r Ride) error {
		if r.Status != RideSearching {
			return nil
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		e.watchLocked(timer{at: r.SearchDeadline.Add(peerGrace), rideID: r.ID})
		if r.Offer != nil {
			e.watchLocked(timer{at: r.Offer.ExpiresAt.Add(peerGrace), rideID: r.ID, offerID: r.Offer.ID})
			return nil
		}
		if _, ok := e.queued[r.ID]; ok {
			return nil
		}
		if at, ok := e.held[r.ID]; ok && now.Sub(at) < orphanAfter {
			return nil
		}
		if now.Sub(r.UpdatedAt) < orphanAfter {
			return nil
		}
		e.enqueueLocked(r.ID)
		adopted = append(adopted, r.ID)
		return nil
	})
	e.mu.Lock()
	for id, at := range e.held {
		if now.Sub(at) >= orphanAfter {
			delete(e.held, id)
		}
	}
	var queue []string
	if e.Peers != nil && len(e.pending) > 0 {
		queue = slices.Clone(e.pending)
	}
	e.mu.Unlock()
	if len(queue) > 0 {
		e.peer(Event{Type: EventQueue, Queue: queue, At: now})
	}
	if len(adopted) > 0 {
		e.Logger.Info("adopted searching rides no replica was handling", slog.Int("rides", len(adopted)),
			slog.String("first", adopted[0]))
		e.poke()
	}
	if err != nil {
		return fmt.Errorf("sweep active rides: %w", err)
	}
	return nil
}
