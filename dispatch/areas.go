package dispatch

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// A region of a deployment serves the areas whose leases it holds (natslog.Leases).
// When it takes one, Adopt rebuilds the area's rides from the log; when another
// region has one it may hold rides of, Moved sends their drivers and riders there.

// Adopt rebuilds area's rides from the ride log when this region has just taken the
// area's lease, before it serves the area (the lease table calls it): every ride the
// log holds for the area whose copy in the Store is missing, or at another version
// (an old copy from when this region last held the area, or one ahead of the log by
// a write the log refused), is put back as logged, ids and versions intact. Searching
// rides go back to matching (an outstanding offer is not restored: the ride searches
// again); matched, arrived and in-progress rides bind their drivers and wait for them
// to connect; a finished ride frees a driver this Store still holds for it. It
// returns how many rides it put back.
func (e *Engine) Adopt(ctx context.Context, area string) (int, error) {
	if e.Log == nil {
		return 0, nil
	}
	n, err := e.adoptFrom(ctx, func(fn func(Ride) error) error { return e.Log.LatestIn(ctx, area, fn) }, false)
	if err != nil {
		return n, fmt.Errorf("adopt area %s from the ride log: %w", area, err)
	}
	return n, nil
}

// adoptFrom puts back the rides read delivers (see Adopt); with onlyMissing it
// touches only rides the Store lacks (refill).
func (e *Engine) adoptFrom(ctx context.Context, read func(func(Ride) error) error, onlyMissing bool) (int, error) {
	now := e.Now()
	adopted := 0
	err := read(func(r Ride) error {
		r.Offer = nil
		if onlyMissing {
			if _, err := e.Store.Ride(ctx, r.ID); !errors.Is(err, ErrRideNotFound) {
				return err // present (nil), or the Store failed
			}
		}
		for attempt := 0; ; attempt++ {
			put, err := e.adoptRide(ctx, r, now)
			if errors.Is(err, ErrVersionConflict) && attempt < maxRetries {
				continue // a driver of it changed meanwhile (its location, a reconnect)
			}
			if err != nil {
				return fmt.Errorf("adopt ride %s: %w", r.ID, err)
			}
			if put {
				adopted++
			}
			break
		}
		switch {
		case r.Status == RideSearching:
			e.timers.watch(timer{at: r.SearchDeadline, rideID: r.ID})
			e.matcher.enqueue(r.ID)
		case !r.Status.Final() && r.DriverID != "" && !onlyMissing:
			// A driver who connected here before the area was taken over was
			// welcomed without its ride: it hears it now.
			e.Notifier.Notify(Event{Type: EventAssigned, DriverID: r.DriverID, Ride: r, At: now})
		}
		return nil
	})
	e.poke()
	return adopted, err
}

// refillLostStore notices that the Store lost its contents while the engine ran (a
// Redis flushed, or restarted empty: its Generation changed) and puts back, from the
// log, every ride it lacks: this region's own and those of the areas it serves, with
// the drivers their active rides bind. Rides the Store still holds (written since)
// are left as they are. It runs with the sweep.
func (e *Engine) refillLostStore(ctx context.Context) error {
	g, ok := e.Store.(Generation)
	if !ok || e.Log == nil {
		return nil
	}
	gen, err := g.Generation(ctx)
	if err != nil || gen == e.generation {
		return err
	}
	if e.generation == "" { // the first look, at Open
		e.generation = gen
		return nil
	}
	e.Logger.Warn("the hot state lost its contents (its generation changed): refilling it from the ride log")
	n, err := e.adoptFrom(ctx, func(fn func(Ride) error) error { return e.Log.Latest(ctx, fn) }, true)
	if err != nil {
		return fmt.Errorf("refill the store from the ride log: %w", err)
	}
	if e.Router != nil {
		for _, a := range e.Router.Deployment.Areas {
			if e.Router.RouteArea(a.Name) != nil {
				continue
			}
			m, err := e.adoptFrom(ctx, func(fn func(Ride) error) error { return e.Log.LatestIn(ctx, a.Name, fn) }, true)
			if err != nil {
				return fmt.Errorf("refill area %s from the ride log: %w", a.Name, err)
			}
			n += m
		}
	}
	e.generation = gen
	e.Logger.Warn("refilled the hot state from the ride log", "rides", n)
	return nil
}

// adoptRide puts logged ride r into the Store unless the Store holds it at its
// version, and binds (or frees) its driver; put says it wrote the ride.
func (e *Engine) adoptRide(ctx context.Context, r Ride, now time.Time) (put bool, err error) {
	var tx Tx
	stored, err := e.Store.Ride(ctx, r.ID)
	switch {
	case errors.Is(err, ErrRideNotFound):
		tx.Restore = []Ride{r}
	case err != nil:
		return false, err
	case stored.Version != r.Version:
		tx.Replace = []Replacement{{Ride: r, Over: stored.Version}}
	}
	if r.DriverID != "" {
		d, err := e.Store.Driver(ctx, r.DriverID)
		found := err == nil
		if err != nil && !errors.Is(err, ErrDriverNotFound) {
			return false, err
		}
		active := !r.Status.Final() && r.Status != RideSearching
		state := DriverEnRoute
		if r.Status == RideInProgress {
			state = DriverOnTrip
		}
		switch {
		case active && !found:
			tx.Drivers = []Driver{{ID: r.DriverID, State: state, RideID: r.ID, UpdatedAt: now}}
		case active && (d.RideID != r.ID || d.State != state):
			d.State, d.RideID, d.OfferID, d.UpdatedAt = state, r.ID, "", now
			tx.Drivers = []Driver{d}
		case !active && found && d.RideID == r.ID:
			// The ride ended elsewhere: the driver is free (and offline until its app
			// says otherwise here).
			d.State, d.RideID, d.OfferID, d.UpdatedAt = DriverOffline, "", "", now
			tx.Drivers = []Driver{d}
			e.supplyOut(d.ID, false)
		}
	}
	if len(tx.Restore)+len(tx.Replace)+len(tx.Drivers) == 0 {
		return false, nil
	}
	if err := e.write(ctx, tx); err != nil {
		return false, err
	}
	return len(tx.Restore)+len(tx.Replace) > 0, nil
}

// Moved tells the drivers and riders of area's rides in flight here that another
// region serves the area now (to, "" when nobody does yet): drivers get a reconnect
// frame to it, riders' event streams end so their clients ask again (and are sent
// there by 421). Rides stay as they are: the region that has the area goes on from
// the log.
func (e *Engine) Moved(area, to string) {
	if e.Router == nil {
		return
	}
	var redirect *Redirect
	if to != "" {
		if r, ok := e.Router.Deployment.Region(to); ok {
			redirect = &Redirect{Region: to, URL: r.URL}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := e.Store.ActiveRides(ctx, func(r Ride) error {
		if r.Area != area {
			return nil
		}
		e.matcher.forget(r.ID)
		driverID := r.DriverID
		if r.Offer != nil {
			driverID = r.Offer.DriverID
		}
		e.Notifier.Notify(Event{Type: EventAreaMoved, DriverID: driverID, Ride: r, To: redirect, At: e.Now()})
		return nil
	})
	if err != nil {
		e.Logger.Warn("could not tell the clients of a moved area", "area", area, "err", err)
	}
}
