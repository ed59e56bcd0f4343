package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// How the ledger and the Store are kept in agreement:
//   - complete writes the trip's entry before it commits the ride completed, and a trip
//     in progress can only end completed (its rider cannot cancel it), so an entry
//     always means a ride that is or will be completed;
//   - a cancel that owes the driver a fee commits that first, on the ride (so the
//     driver can no longer start), then writes the fee, then cancels;
//   - whatever stops half way (a commit or a ledger write that fails, a crash) is
//     finished: by the client's retry, by Step for what this process saw fail
//     (the settler), and at Open for every trip in progress and every owed fee in the
//     Store (finishInterrupted);
//   - a retried complete or cancel of a ride already final re-appends it to the ride
//     log (settle), which a first try may have missed after its Store commit.

// settleInterval is how often Step retries the completes and cancels that failed half
// way in this process.
const settleInterval = time.Second

// record writes entry to the ledger and returns it as stored: an earlier try's, if
// there was one.
func (e *Engine) record(ctx context.Context, entry LedgerEntry) (LedgerEntry, error) {
	if e.Ledger == nil {
		return entry, nil
	}
	stored, err := e.Ledger.Record(ctx, entry)
	if err != nil {
		return LedgerEntry{}, fmt.Errorf("record ride %s in the ledger: %w", entry.RideID, err)
	}
	return stored, nil
}

// cancellationFee is the fee owed for ride r, in its currency.
func (e *Engine) cancellationFee(r Ride) Money {
	return Money{Amount: e.Config.Fare.CancellationFee, Currency: r.Fare.Currency}
}

// settle makes sure the final ride r, as stored, is in the ride log and, when it pays
// its driver, in the ledger: a first try may have stopped after its Store commit.
func (e *Engine) settle(ctx context.Context, r Ride) error {
	if e.Log != nil {
		if err := e.Log.Append(ctx, []Ride{r}); err != nil {
			e.settler.add(r.ID)
			return fmt.Errorf("append to the ride log: %w", err)
		}
	}
	var entry LedgerEntry
	switch {
	case r.Status == RideCompleted:
		entry = tripEntry(r, e.Region, e.Now())
	case r.Status == RideCancelled && !r.CancelFeeAt.IsZero():
		entry = feeEntry(r, e.cancellationFee(r), e.Region, e.Now())
	default:
		return nil
	}
	if _, err := e.record(ctx, entry); err != nil {
		e.settler.add(r.ID)
		return err
	}
	return nil
}

// settler holds the rides whose complete or cancel stopped half way in this process
// (between the ledger and the Store), for Step to finish. Its mutex is a leaf.
type settler struct {
	mu   sync.Mutex
	ids  map[string]struct{}
	next time.Time
}

// add remembers that ride id's complete or cancel stopped half way.
func (s *settler) add(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids == nil {
		s.ids = make(map[string]struct{})
	}
	s.ids[id] = struct{}{}
}

// due returns, at most every settleInterval, the rides to finish, and forgets them.
func (s *settler) due(now time.Time) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ids) == 0 || now.Before(s.next) {
		return nil
	}
	s.next = now.Add(settleInterval)
	ids := make([]string, 0, len(s.ids))
	for id := range s.ids {
		ids = append(ids, id)
	}
	clear(s.ids)
	return ids
}

// finishUnsettled finishes what the settler holds, at most every settleInterval.
func (e *Engine) finishUnsettled(ctx context.Context, now time.Time) error {
	var errs []error
	for _, id := range e.settler.due(now) {
		if err := e.finish(ctx, id); err != nil {
			e.settler.add(id)
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("finish interrupted completes and cancels: %w", err)
	}
	return nil
}

// finish completes what a complete or cancel of ride id left half done: a trip in
// progress whose entry is in the ledger is completed, a cancel whose fee is owed is
// finished, and a final ride is settled. A trip in progress without an entry is left
// to its driver: its complete never reached the ledger.
func (e *Engine) finish(ctx context.Context, id string) error {
	r, err := e.Store.Ride(ctx, id)
	switch {
	case errors.Is(err, ErrRideNotFound):
		return nil
	case err != nil:
		return err
	}
	switch {
	case r.Status == RideInProgress:
		if e.Ledger == nil {
			return nil
		}
		if _, err := e.Ledger.Entry(ctx, r.DriverID, r.ID); errors.Is(err, ErrNoLedgerEntry) {
			return nil
		} else if err != nil {
			return fmt.Errorf("look up ride %s in the ledger: %w", r.ID, err)
		}
		if _, err := e.Drivers().Complete(ctx, r.DriverID, r.ID); err != nil {
			return fmt.Errorf("finish completing ride %s: %w", r.ID, err)
		}
		e.Logger.Warn("completed a trip whose entry was in the ledger but not its commit",
			slog.String("ride_id", r.ID), slog.String("driver_id", r.DriverID))
	case !r.CancelFeeAt.IsZero() && !r.Status.Final():
		if _, err := e.Riders().CancelRide(ctx, r.ID); err != nil {
			return fmt.Errorf("finish cancelling ride %s: %w", r.ID, err)
		}
		e.Logger.Warn("finished a cancel that owed its driver the fee", slog.String("ride_id", r.ID),
			slog.String("driver_id", r.DriverID))
	case r.Status.Final():
		return e.settle(ctx, r)
	}
	return nil
}

// finishInterrupted finishes, at Open, every complete and cancel that stopped half way
// before this process started (it crashed between the ledger and the Store, or the
// Store was refilled from a ride log that missed the last change). What it cannot
// finish now, Step retries.
func (e *Engine) finishInterrupted(ctx context.Context) error {
	var ids []string
	err := e.Store.ActiveRides(ctx, func(r Ride) error {
		if (r.Status == RideInProgress && e.Ledger != nil) || !r.CancelFeeAt.IsZero() {
			ids = append(ids, r.ID)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("look for interrupted completes and cancels: %w", err)
	}
	for _, id := range ids {
		if err := e.finish(ctx, id); err != nil {
			e.settler.add(id)
			e.Logger.Warn("could not finish an interrupted complete or cancel yet", slog.String("ride_id", id), slog.Any("err", err))
		}
	}
	return nil
}
