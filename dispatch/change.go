package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// A change is what one operation of the engine wants done: the driver and ride
// records to commit together (each as read, with the version it was read at), and what
// follows once they are committed. Operations only read and decide; apply does the
// rest, the same way for every change:
//
//  1. hold the driver's sequencer slot (a driver hears its events in commit order);
//  2. commit the records in one Store transaction carrying the engine's fencing epoch
//     (the place an area's lease check belongs: a writer without the lease commits
//     nothing);
//  3. append the ride to the durable log, unless the change is an offer;
//  4. take a driver that the change made busy or offline out of supply, set timers;
//  5. tell the clients: the change's events, then ride_changed if the ride's status
//     changed, each carrying the ride as committed;
//  6. free the slot, and only then put a driver the change made available back into
//     supply and the ride back into the matcher's queue.
type change struct {
	driver Driver // at most one driver per change; none while its ID is empty
	ride   Ride   // at most one ride per change; none while its ID is empty
	// offer marks a transient change: the log keeps an offer's outcome, not the
	// offer, so the matching loop never waits on the log.
	offer bool
	// events go out in order after the commit (at most two: an offer revoked and the
	// driver taken offline), each completed with the ride as committed.
	events  [2]Event
	nEvents int
	// changed says the ride's status changed: its followers hear ride_changed.
	changed bool
	// outcome, if set, is the offer outcome this change counts.
	outcome string
	// requeue puts the ride back into the matcher's queue.
	requeue bool
	// watch is a timer to set once committed, if its rideID is set.
	watch timer
	// paid says the ledger already holds this change's entry: if the commit fails,
	// the settler finishes it (pay.go).
	paid bool
	// answer says the operation only read: nothing is committed, and its answer is
	// the records as read.
	answer bool
}

// answer is the change of an operation that finds nothing to do: the caller gets d
// and r as they are (either may be nil).
func answer(d Driver, r Ride) change { return change{driver: d, ride: r, answer: true} }

// empty reports whether c has nothing to commit.
func (c *change) empty() bool { return c.driver.ID == "" && c.ride.ID == "" }

// tell adds a client event about c's ride.
func (c *change) tell(ev Event) {
	c.events[c.nEvents] = ev
	c.nEvents++
}

// maxRetries is how often apply runs an operation again after a version conflict.
const maxRetries = 16

// apply runs op and commits the change it returns; when the commit loses a race with
// another writer (ErrVersionConflict), it runs op again on fresh reads, at most
// maxRetries more times. It returns the change as committed, versions as stored. An
// op that finds nothing to do returns an empty change or an answer.
func (e *Engine) apply(ctx context.Context, op func(now time.Time) (change, error)) (change, error) {
	for attempt := 0; ; attempt++ {
		now := e.Now()
		c, err := op(now)
		if err == nil && !c.answer && !c.empty() {
			err = e.commit(ctx, &c, now)
			if err != nil && c.paid {
				e.settler.add(c.ride.ID)
			}
		}
		if !errors.Is(err, ErrVersionConflict) {
			return c, retryable(err)
		}
		if attempt >= maxRetries || ctx.Err() != nil {
			e.Logger.Warn("commit kept losing races with concurrent changes: given up",
				slog.Int("attempts", attempt+1), slog.Any("err", err))
			return c, err
		}
		e.Logger.Debug("commit lost a race: retrying", slog.Int("attempt", attempt+1), slog.Any("err", err))
	}
}

// retryable gives an error that only says the caller's deadline passed (a Store, the
// ride log or the ledger too slow to answer under load, a driver's slot held that
// long) the code unavailable, with Retry-After: the client sends the same request
// again, which finds whatever part of it was done. An error with its own code keeps it.
func retryable(err error) error {
	if ErrorCode(err) != ECodeInternal || !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return &Error{Code: ECodeUnavailable, RetryAfterS: 1, Err: err,
		Message: "not done in time (the region is overloaded): send it again shortly"}
}

// commit carries out c (see change) at now.
func (e *Engine) commit(ctx context.Context, c *change, now time.Time) error {
	release := func() {}
	if id := c.driver.ID; id != "" {
		var err error
		if release, err = e.seq.lock(ctx, id); err != nil {
			return fmt.Errorf("wait for driver %s's events: %w", id, err)
		}
	}
	var tx Tx
	if c.driver.ID != "" {
		tx.Drivers = []Driver{c.driver}
	}
	if c.ride.ID != "" {
		tx.Rides = []Ride{c.ride}
	}
	if err := e.write(ctx, tx); err != nil {
		release()
		return err
	}
	if c.driver.ID != "" {
		c.driver.Version++
	}
	if c.ride.ID != "" {
		c.ride.Version++
		if e.Log != nil && !c.offer {
			tx.Rides[0] = c.ride // as stored
			if err := e.logRides(ctx, tx.Rides); err != nil {
				release()
				return fmt.Errorf("append to the ride log: %w", err)
			}
		}
	}
	d := &c.driver
	if d.ID != "" && d.Version > 1 && (d.State == DriverOffered || d.State == DriverOffline) {
		e.supplyOut(d.ID, true) // a new driver (version 1) was never in supply
	}
	if c.watch.rideID != "" {
		e.timers.watch(c.watch)
	}
	e.tellAll(c, now)
	release()
	if d.ID != "" && d.State == DriverAvailable {
		e.makeAvailable(*d) // only now that it has heard of its previous ride
	}
	if c.requeue {
		e.matcher.enqueue(c.ride.ID)
	}
	return nil
}

// write commits tx to the Store with the engine's fencing epoch. Every write of the
// engine goes through it, and here an area's lease is checked on this region's own
// clock: a write that leaves a ride searching or matched (creating it, offering it,
// assigning it) is refused unless this region serves the ride's area now, with
// wrong_region or no_lease. Offers are never logged, so this check is what stops a
// region whose lease ran out from assigning. Every other ride write (a trip step, a
// cancel) is held to the log's fence for the area instead (logRides), which refuses
// it if another region has taken the area, whatever this region's clock says.
// Restored rides are written by the region that has just taken their area (adopt).
func (e *Engine) write(ctx context.Context, tx Tx) error {
	for _, r := range tx.Rides {
		if r.Status != RideSearching && r.Status != RideMatched {
			continue
		}
		if err := e.Router.RouteArea(r.Area); err != nil {
			return err
		}
	}
	tx.Epoch = e.Epoch
	err := e.Store.Commit(ctx, tx)
	if errors.Is(err, ErrVersionConflict) {
		e.Metrics.Conflict()
	}
	return err
}

// logRides appends rides to the durable log. A write the log refuses because
// another region has taken the ride's area (ErrFenced) is counted and logged: this
// region believed it held a lease it had lost, and the log kept it from acting on it.
func (e *Engine) logRides(ctx context.Context, rides []Ride) error {
	err := e.Log.Append(ctx, rides)
	if errors.Is(err, ErrFenced) {
		e.Metrics.FencedWrite()
		e.Logger.Warn("the ride log refused a stale write: another region holds the area now",
			slog.String("ride", rides[0].ID), slog.String("area", rides[0].Area), slog.Any("err", err))
		if to := RedirectOf(e.Router.RouteArea(rides[0].Area)); to != nil {
			// Where the caller's ride is served now, for its driver to go there.
			return &Error{Code: ECodeWrongRegion, Message: ErrFenced.Message + ": region " + to.Region + " serves it",
				Err: err, Redirect: to}
		}
	}
	return err
}

// tellAll sends c's events, and ride_changed when its ride's status changed, and
// counts what c ended.
func (e *Engine) tellAll(c *change, now time.Time) {
	r := c.ride
	for _, ev := range c.events[:c.nEvents] {
		ev.Ride, ev.At = r, now
		e.notify(ev)
	}
	if c.outcome != "" {
		e.Metrics.OfferOutcome(c.outcome)
	}
	if !c.changed {
		return
	}
	e.notify(Event{Type: EventRideChanged, Ride: r, At: now})
	if r.Status.Final() {
		e.matcher.forget(r.ID)
		e.Metrics.RideEnded(r.Status)
	}
}

// notify is the one fan-out of client events: to this process's clients (Notifier)
// and, through Peers, to the other replicas' clients.
func (e *Engine) notify(ev Event) {
	e.Notifier.Notify(ev)
	if e.Peers != nil {
		e.Peers.Forward(ev)
	}
}

// makeAvailable puts a driver that just became available into the supply index and,
// with MatchInterval zero, wakes the loop so pending rides can have it at once.
func (e *Engine) makeAvailable(d Driver) {
	if d.State == DriverAvailable && d.Location != nil && !e.replicas.isAway(d.ID) {
		e.supplyIn(d.ID, *d.Location)
		e.poke()
	}
}

// holder loads the driver holding ride r as read: the driver of its offer, or the
// driver it is assigned to. ok is false when r has none, or that driver has moved on.
func (e *Engine) holder(ctx context.Context, r Ride) (d Driver, ok bool, err error) {
	driverID, offerID := r.DriverID, ""
	if r.Offer != nil {
		driverID, offerID = r.Offer.DriverID, r.Offer.ID
	}
	if driverID == "" {
		return Driver{}, false, nil
	}
	if d, err = e.Store.Driver(ctx, driverID); err != nil {
		return Driver{}, false, fmt.Errorf("load driver %s: %w", driverID, err)
	}
	return d, d.RideID == r.ID && (offerID == "" || d.OfferID == offerID), nil
}

// release lets driver d go from its offer or ride in change c: d moves to next
// (available, or offline) and, when ev has a type, hears ev. A cancel, the end of a
// search, an expired offer and a decline all free their driver here; d rejoins supply
// only once c's events are out (commit).
func release(c *change, d Driver, next DriverState, now time.Time, ev Event) error {
	if err := d.moveTo(next, now); err != nil {
		return err
	}
	c.driver = d
	if ev.Type != "" {
		ev.DriverID = d.ID
		c.tell(ev)
	}
	return nil
}
