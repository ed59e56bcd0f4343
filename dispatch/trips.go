package dispatch

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Arrived, Start and Complete report trip progress. Repeating a step that already
// happened returns the ride unchanged, so a retried frame is harmless.
func (ds Drivers) Arrived(ctx context.Context, driverID, rideID string) (Ride, error) {
	return ds.e.progress(ctx, driverID, rideID, RideArrived, DriverEnRoute)
}

// Start: the rider is on board.
func (ds Drivers) Start(ctx context.Context, driverID, rideID string) (Ride, error) {
	return ds.e.progress(ctx, driverID, rideID, RideInProgress, DriverOnTrip)
}

// Complete: the trip is over; the driver is available again. The trip's ledger entry
// is durable before the ride is completed anywhere (pay.go says why).
func (ds Drivers) Complete(ctx context.Context, driverID, rideID string) (Ride, error) {
	return ds.e.progress(ctx, driverID, rideID, RideCompleted, DriverAvailable)
}

// stepTimeout bounds a trip step once started, however soon its caller stops
// waiting.
const stepTimeout = 30 * time.Second

// steps are the trip steps in flight, by driver, ride and status; a step's caller that
// stops waiting (its frame's deadline) leaves it running, and a retry of the same step
// waits for that one instead of starting it again. So a step that needs longer than
// one frame's deadline under load (a complete is a ledger write, a Store commit and a
// ride log append) is carried through by its retries rather than begun anew by each
// and given up by each at the same point. Its mutex is a leaf.
type steps struct {
	mu       sync.Mutex
	inFlight map[string]*step
	closed   bool               // Close began: steps run in their callers
	stop     context.CancelFunc // ends the steps in flight (Close), with ctx
	ctx      context.Context
	wg       sync.WaitGroup // one per step in flight
}

// stepsGrace is how long Close lets the steps in flight finish before it ends them
// (a complete ended half way is finished at the next start: pay.go).
const stepsGrace = 5 * time.Second

// close waits for the steps in flight, for up to stepsGrace, then ends them and
// waits for them to return.
func (s *steps) close() {
	s.mu.Lock()
	s.closed = true
	stop := s.stop
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(stepsGrace):
	}
	if stop != nil {
		stop()
	}
	<-done
}

type step struct {
	done chan struct{}
	ride Ride
	err  error
}

// progress moves driverID's ride rideID to status to and the driver to driverTo, or
// joins the same step already in flight. A caller whose ctx ends first gets
// unavailable (send it again); the step carries on for up to stepTimeout.
func (e *Engine) progress(ctx context.Context, driverID, rideID string, to RideStatus, driverTo DriverState) (Ride, error) {
	key := driverID + "\x00" + rideID + "\x00" + string(to)
	e.steps.mu.Lock()
	if e.steps.closed {
		e.steps.mu.Unlock()
		return e.doProgress(ctx, driverID, rideID, to, driverTo)
	}
	st := e.steps.inFlight[key]
	if st == nil {
		if e.steps.inFlight == nil {
			e.steps.inFlight = make(map[string]*step)
			e.steps.ctx, e.steps.stop = context.WithCancel(context.Background())
		}
		st = &step{done: make(chan struct{})}
		e.steps.inFlight[key] = st
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stepTimeout)
		unhook := context.AfterFunc(e.steps.ctx, cancel) // Close ends it
		e.steps.wg.Add(1)
		go func() {
			defer e.steps.wg.Done()
			defer unhook()
			defer cancel()
			st.ride, st.err = e.doProgress(sctx, driverID, rideID, to, driverTo)
			e.steps.mu.Lock()
			delete(e.steps.inFlight, key)
			e.steps.mu.Unlock()
			close(st.done)
		}()
	}
	e.steps.mu.Unlock()
	select {
	case <-st.done:
		return st.ride, st.err
	case <-ctx.Done():
		return Ride{}, retryable(fmt.Errorf("%s ride %s: still being stored: %w", to, rideID, ctx.Err()))
	}
}

// doProgress carries out the step of progress.
func (e *Engine) doProgress(ctx context.Context, driverID, rideID string, to RideStatus, driverTo DriverState) (Ride, error) {
	c, err := e.apply(ctx, func(now time.Time) (change, error) {
		r, err := e.Store.Ride(ctx, rideID)
		if err != nil {
			return change{}, err
		}
		if r.DriverID != driverID {
			if r.Offer != nil && r.Offer.DriverID == driverID {
				return change{}, wrapf(ErrIllegalTransition, "ride %s is only offered to driver %s: accept it first", rideID, driverID)
			}
			return change{}, wrapf(ErrRideNotFound, "ride %s is not assigned to driver %s", rideID, driverID)
		}
		if r.Status == to {
			// A retried frame. For complete, the first try may have stopped between
			// the Store and the ride log: settle writes what is missing.
			if to == RideCompleted {
				return answer(Driver{}, r), e.settle(ctx, r)
			}
			return answer(Driver{}, r), nil
		}
		if to == RideInProgress && !r.CancelFeeAt.IsZero() {
			return change{}, wrapf(ErrIllegalTransition, "ride %s was cancelled by its rider", rideID)
		}
		d, err := e.Store.Driver(ctx, driverID)
		if err != nil {
			return change{}, err
		}
		if err := r.moveTo(to, now); err != nil {
			return change{}, err
		}
		c := change{changed: true}
		if d.State != driverTo {
			if err := d.moveTo(driverTo, now); err != nil {
				return change{}, err
			}
			if driverTo != DriverAvailable {
				d.RideID = r.ID
			}
			c.driver = d
		}
		if to == RideCompleted {
			// The trip's entry comes first, durable before the ride is completed
			// anywhere: so no completed ride lacks its entry, and since a trip in
			// progress can only end completed, an entry always means a ride that will
			// be. A commit that fails after it is finished by the driver's retry, by
			// Step (the settler) or at the next Open.
			entry, err := e.record(ctx, tripEntry(r, e.Region, now))
			if err != nil {
				return change{}, err
			}
			r.EndedAt = entry.CompletedAt // as first recorded, if an earlier try did
			c.paid = true
		}
		c.ride = r
		return c, nil
	})
	if err != nil {
		return Ride{}, err
	}
	return c.ride, nil
}
