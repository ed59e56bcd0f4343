package dispatch

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/understudy/understudy/dispatch/assign"
	"github.com/understudy/understudy/dispatch/supply"
)

// matcher is the matching loop's state: the rides waiting for an offer, oldest
// first, and when each ride got its first offer (for the match latency). Its mutex is
// a leaf.
type matcher struct {
	mu       sync.Mutex
	pending  []string
	queued   map[string]struct{} // the set of ids in pending
	firstOff map[string]time.Time
}

// enqueue adds ride id to the queue unless it is there already.
func (m *matcher) enqueue(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.queued[id]; ok {
		return
	}
	if m.queued == nil {
		m.queued = make(map[string]struct{})
	}
	m.queued[id] = struct{}{}
	m.pending = append(m.pending, id)
}

// take empties the queue and returns what it held.
func (m *matcher) take() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	ids := m.pending
	m.pending = nil
	clear(m.queued)
	return ids
}

// has reports whether ride id is queued.
func (m *matcher) has(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.queued[id]
	return ok
}

// queue returns a copy of the queue.
func (m *matcher) queue() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.pending...)
}

func (m *matcher) len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.pending)
}

// firstOffer reports whether ride id gets its first offer at now, and remembers it.
func (m *matcher) firstOffer(id string, now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, seen := m.firstOff[id]; seen {
		return false
	}
	if m.firstOff == nil {
		m.firstOff = make(map[string]time.Time)
	}
	m.firstOff[id] = now
	return true
}

// forget drops what the matcher remembers of ride id, which has ended.
func (m *matcher) forget(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.firstOff, id)
}

// maxRounds bounds how often one tick re-batches the rides its earlier rounds left
// without a driver. A claim removes the driver from the supply index, so each round
// sees fresh candidates: rides that all listed the same few drivers near a hub get
// the next ones within the same tick instead of a tick later.
const maxRounds = 4

// matchPending assigns the batch of pending rides to nearby available drivers and
// sends one offer per assigned ride. Rides that got none stay pending.
func (e *Engine) matchPending(ctx context.Context, now time.Time) error {
	ids := e.matcher.take()
	if len(ids) == 0 {
		return nil
	}
	start := time.Now()
	rides := make([]Ride, 0, len(ids))
	for k, id := range ids {
		r, err := e.Store.Ride(ctx, id)
		if err != nil {
			if !errors.Is(err, ErrRideNotFound) {
				for _, id := range ids[k:] {
					e.matcher.enqueue(id)
				}
				return fmt.Errorf("load pending ride %s: %w", id, err)
			}
			continue
		}
		if r.Status == RideSearching && r.Offer == nil && e.Router.RouteArea(r.Area) == nil {
			rides = append(rides, r) // a ride of an area served elsewhere now leaves the queue
		}
	}
	total, offered := len(rides), 0
	var errs []error
	for round := 0; round < maxRounds && len(rides) > 0; round++ {
		left, n, err := e.matchRound(ctx, rides, now)
		if err != nil {
			errs = append(errs, err)
		}
		offered += n
		rides = left
		if n == 0 {
			break
		}
	}
	for _, r := range rides {
		e.matcher.enqueue(r.ID)
	}
	e.Metrics.BatchSolved(total, offered, time.Since(start))
	return errors.Join(errs...)
}

// matchRound solves one optimal assignment of rides to their nearest available
// drivers and sends the offers. It returns the rides still without an offer whose
// driver may yet be found this tick; rides whose claim failed otherwise go back to
// the queue.
func (e *Engine) matchRound(ctx context.Context, rides []Ride, now time.Time) (left []Ride, offered int, err error) {
	var (
		edges   []assign.Edge
		drivers []supply.Candidate
		index   = make(map[string]int)
		buf     []supply.Candidate
		first   = make([]int, len(rides)+1) // edges of ride i are edges[first[i]:first[i+1]]
	)
	for i := range rides {
		r := &rides[i]
		first[i] = len(edges)
		var skip func(string) bool
		if len(r.Declined) > 0 {
			skip = r.hasDeclined
		}
		buf = e.supply.Nearest(supply.Point(r.Pickup), e.Config.Candidates, e.Config.MaxRadiusM, skip, buf)
		for _, c := range buf {
			j, ok := index[c.DriverID]
			if !ok {
				j = len(drivers)
				index[c.DriverID] = j
				drivers = append(drivers, c)
			}
			edges = append(edges, assign.Edge{Ride: i, Driver: j, Cost: c.DistanceM})
		}
	}
	first[len(rides)] = len(edges)
	var errs []error
	for i, j := range assign.Solve(len(rides), len(drivers), edges) {
		r := rides[i]
		if j < 0 {
			left = append(left, r)
			continue
		}
		var pickupM float64
		for _, ed := range edges[first[i]:first[i+1]] {
			if ed.Driver == j {
				pickupM = ed.Cost
			}
		}
		switch err := e.offer(ctx, r, drivers[j].DriverID, pickupM, now); {
		case err == nil:
			offered++
		case errors.Is(err, ErrDriverBusy):
			left = append(left, r) // the index was stale; try the next driver
		default:
			if ErrorCode(err) == ECodeInternal {
				errs = append(errs, err)
			}
			e.matcher.enqueue(r.ID) // e.g. cancelled meanwhile: the next tick rereads it
		}
	}
	return left, offered, errors.Join(errs...)
}

// offer claims driverID for ride r in one commit and sends the offer.
func (e *Engine) offer(ctx context.Context, r Ride, driverID string, pickupM float64, now time.Time) error {
	d, err := e.Store.Driver(ctx, driverID)
	if err != nil {
		return fmt.Errorf("claim driver %s: %w", driverID, err)
	}
	if d.State != DriverAvailable {
		e.supplyOut(driverID, true) // the index was stale, and so may the others' be
		return wrapf(ErrDriverBusy, "claim driver %s", driverID)
	}
	o := Offer{
		ID: newID("o"), RideID: r.ID, DriverID: driverID,
		Pickup: r.Pickup, Dropoff: r.Dropoff, Fare: r.Fare, PickupM: math.Round(pickupM),
		CreatedAt: now, ExpiresAt: now.Add(e.Config.OfferTimeout),
	}
	if err := d.moveTo(DriverOffered, now); err != nil {
		return err
	}
	d.OfferID, d.RideID = o.ID, r.ID
	r.Offer = &o
	r.UpdatedAt = now
	c := change{driver: d, ride: r, offer: true, watch: timer{at: o.ExpiresAt, rideID: r.ID, offerID: o.ID}}
	c.tell(Event{Type: EventOffer, DriverID: driverID, Offer: &o})
	if err := e.commit(ctx, &c, now); err != nil {
		return fmt.Errorf("claim driver %s for ride %s: %w", driverID, r.ID, err)
	}
	if e.matcher.firstOffer(r.ID, now) {
		e.Metrics.MatchLatency(now.Sub(r.CreatedAt))
	}
	return nil
}
