package dispatch

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// peerGrace is how long after an offer's expiry or a search's deadline a replica that
// did not set that timer waits before acting on it: the replica that did goes first,
// and the others only step in when it did not (it died). Acting twice is harmless (the
// second commit finds the ride changed), this only saves the work.
const peerGrace = 250 * time.Millisecond

// sweepDue reports whether the sweep is due at now and, if so, schedules the next one
// interval later.
func (rs *replicas) sweepDue(now time.Time, interval time.Duration) bool {
	if interval <= 0 {
		return false
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if now.Before(rs.nextSweep) {
		return false
	}
	rs.nextSweep = now.Add(interval)
	return true
}

// hold records that another replica said at now it is matching rides ids.
func (rs *replicas) hold(ids []string, now time.Time) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.held == nil {
		rs.held = make(map[string]time.Time)
	}
	for _, id := range ids {
		rs.held[id] = now
	}
}

// heldSince reports whether another replica said within the last d before now that
// it is matching ride id.
func (rs *replicas) heldSince(id string, now time.Time, d time.Duration) bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	at, ok := rs.held[id]
	return ok && now.Sub(at) < d
}

// forgetHeld forgets what other replicas said before now minus d.
func (rs *replicas) forgetHeld(now time.Time, d time.Duration) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for id, at := range rs.held {
		if now.Sub(at) >= d {
			delete(rs.held, id)
		}
	}
}

// orphanAfter is how long a searching ride without an offer must have gone unchanged,
// and unclaimed by any replica's PeerQueue, before the sweep adopts it: two sweeps,
// so that one late announcement does not make two replicas search for it.
func (e *Engine) orphanAfter() time.Duration { return 2 * e.Config.SweepInterval }

// sweep reads every active ride from the Store, counts those of the areas this region
// serves (Metrics.InFlight), and takes over what nobody handles.
// Each replica's timers and queue cover the rides it touched; the sweep covers the
// rides of a replica that died:
//   - an outstanding offer gets an expiry timer at ExpiresAt plus peerGrace, and a
//     searching ride a deadline timer at SearchDeadline plus peerGrace (already due
//     ones fire in this Step);
//   - a searching ride without an offer that is in no replica's queue (none announced
//     it within orphanAfter, and it has not changed for as long) joins this one's.
//
// Then it announces this replica's queue (PeerQueue) to the others. Several replicas
// sweeping at once is safe: whatever they then do is a versioned commit, and only one
// commit per ride version wins.
func (e *Engine) sweep(ctx context.Context, now time.Time) error {
	orphanAfter := e.orphanAfter()
	var adopted []string
	inFlight, serves := e.servedAreas()
	err := e.Store.ActiveRides(ctx, func(r Ride) error {
		if serves(r.Area) {
			inFlight[AreaStatus{r.Area, r.Status}]++
		}
		if r.Status != RideSearching {
			return nil
		}
		e.timers.watch(timer{at: r.SearchDeadline.Add(peerGrace), rideID: r.ID})
		switch {
		case r.Offer != nil:
			e.timers.watch(timer{at: r.Offer.ExpiresAt.Add(peerGrace), rideID: r.ID, offerID: r.Offer.ID})
		case e.matcher.has(r.ID), e.replicas.heldSince(r.ID, now, orphanAfter), now.Sub(r.UpdatedAt) < orphanAfter:
		default:
			e.matcher.enqueue(r.ID)
			adopted = append(adopted, r.ID)
		}
		return nil
	})
	if err == nil {
		e.Metrics.InFlight(inFlight)
	}
	e.replicas.forgetHeld(now, orphanAfter)
	if e.Peers != nil {
		if queue := e.matcher.queue(); len(queue) > 0 {
			e.peer(PeerEvent{Type: PeerQueue, Queue: queue, At: now})
		}
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

// servedAreas returns an InFlight count of nothing yet for each area this region
// serves now, so that each has a series from its first sweep, and whether it serves
// an area, from that one look at the leases (not one per ride).
func (e *Engine) servedAreas() (map[AreaStatus]int, func(area string) bool) {
	counts := map[AreaStatus]int{}
	if e.Router == nil {
		counts[AreaStatus{"", RideSearching}] = 0
		return counts, func(string) bool { return true }
	}
	served := map[string]bool{"": true} // a ride from before any deployment (RouteArea)
	for _, a := range e.Router.Deployment.Areas {
		if e.Router.RouteArea(a.Name) == nil {
			served[a.Name] = true
			counts[AreaStatus{a.Name, RideSearching}] = 0
		}
	}
	return counts, func(area string) bool { return served[area] }
}
