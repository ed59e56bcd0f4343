package dispatch

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// timers holds the engine's deadlines: offer expiries and search deadlines. Its mutex
// is a leaf.
type timers struct {
	mu      sync.Mutex
	heap    timerHeap
	watched map[timerKey]struct{}
}

// timer is an offer expiry (offerID set) or a search deadline.
type timer struct {
	at      time.Time
	rideID  string
	offerID string
}

// timerKey names what a timer is for: one ride's search deadline or one offer's expiry.
type timerKey struct{ rideID, offerID string }

func (t timer) key() timerKey { return timerKey{t.rideID, t.offerID} }

// watch sets each timer unless one for the same offer (or search deadline) is set
// already: the first one set wins, so the replica that made an offer fires its expiry
// on time and the others, which watch it a grace period later, only when it did not.
func (ts *timers) watch(list ...timer) {
	if len(list) == 0 {
		return
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.watched == nil {
		ts.watched = make(map[timerKey]struct{})
	}
	for _, t := range list {
		k := t.key()
		if _, ok := ts.watched[k]; ok {
			continue
		}
		ts.watched[k] = struct{}{}
		heap.Push(&ts.heap, t)
	}
}

// due removes and returns the timers due at now, earliest first.
func (ts *timers) due(now time.Time) []timer {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	var due []timer
	for len(ts.heap) > 0 && !ts.heap[0].at.After(now) {
		t := heap.Pop(&ts.heap).(timer)
		delete(ts.watched, t.key())
		due = append(due, t)
	}
	return due
}

type timerHeap []timer

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h timerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)        { *h = append(*h, x.(timer)) }
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	*h = old[:len(old)-1]
	return t
}

// fire acts on one due timer: an offer expiry revokes the offer (the ride cascades),
// a search deadline ends the search as no_driver. A timer whose offer was answered or
// whose ride moved on does nothing.
func (e *Engine) fire(ctx context.Context, t timer) error {
	_, err := e.apply(ctx, func(now time.Time) (change, error) {
		r, err := e.Store.Ride(ctx, t.rideID)
		switch {
		case errors.Is(err, ErrRideNotFound):
			return change{}, nil
		case err != nil:
			return change{}, err
		case r.Status != RideSearching:
			return change{}, nil
		case e.Router.RouteArea(r.Area) != nil:
			return change{}, nil // another region has the area now; adopt sets timers again
		}
		if t.offerID != "" { // offer expiry
			if r.Offer == nil || r.Offer.ID != t.offerID {
				return change{}, nil // answered already
			}
			d, err := e.Store.Driver(ctx, r.Offer.DriverID)
			if err != nil {
				return change{}, err
			}
			if d.OfferID != t.offerID {
				return change{}, fmt.Errorf("offer %s: driver %s holds %q instead", t.offerID, d.ID, d.OfferID)
			}
			return e.revoke(d, r, now)
		}
		if now.Before(r.SearchDeadline) {
			return change{}, nil
		}
		return e.endSearch(ctx, r, now)
	})
	return err
}

// endSearch ends searching ride r as no_driver, revoking any outstanding offer.
func (e *Engine) endSearch(ctx context.Context, r Ride, now time.Time) (change, error) {
	c := change{changed: true}
	if r.Offer != nil {
		d, ok, err := e.holder(ctx, r)
		if err != nil {
			return change{}, err
		}
		if ok {
			ev := Event{Type: EventOfferRevoked, Offer: r.Offer, Reason: ReasonTaken}
			if err := release(&c, d, DriverAvailable, now, ev); err != nil {
				return change{}, err
			}
			c.outcome = OutcomeRevoked
		}
	}
	if err := r.moveTo(RideNoDriver, now); err != nil {
		return change{}, err
	}
	c.ride = r
	return c, nil
}
