package dispatch

import (
	"context"
	"sync"
)

// sequencer makes each driver hear its events in the order they were committed.
//
// Every commit that tells a driver something (an offer, its revocation, an assignment,
// a cancel, being taken offline) includes the driver's record, so the Store orders
// those commits by the driver's version. The engine holds the driver's slot from just
// before such a commit until its events are published: two of them in one process
// publish in commit order, whichever goroutines ran them (the driver's socket, the
// rider's request, the matching loop), and a driver the commit frees is offered
// nothing new before it has been told.
//
// Other replicas' events reach this process over the bus. Replicas.Deliver hands them
// on at once, except those for a driver whose slot is held: they wait for the holder's
// publish, so a remote event committed after a local one cannot overtake it.
//
// The slot is held across the Store commit (and the ride log's append): only commits
// for the same driver wait for it, which the Store would order anyway.
//
// Lock order: a slot, then sequencer.mu, then whatever a delivery takes (the gateway's
// mutex). sequencer.mu is never held while waiting for a slot.
type sequencer struct {
	mu    sync.Mutex
	slots map[string]*slot
}

type slot struct {
	token chan struct{} // holds one value while the slot is held
	refs  int           // holders and waiters; the slot is forgotten at zero
	held  bool          // a holder is between its commit and its publish
	// waiting are remote deliveries for the driver that arrived while held, in order.
	waiting []func()
}

// lock waits for key's slot and returns the func that frees it.
func (s *sequencer) lock(ctx context.Context, key string) (unlock func(), err error) {
	s.mu.Lock()
	if s.slots == nil {
		s.slots = make(map[string]*slot)
	}
	sl := s.slots[key]
	if sl == nil {
		sl = &slot{token: make(chan struct{}, 1)}
		s.slots[key] = sl
	}
	sl.refs++
	s.mu.Unlock()
	select {
	case sl.token <- struct{}{}:
	case <-ctx.Done():
		s.mu.Lock()
		s.forget(key, sl)
		s.mu.Unlock()
		return nil, ctx.Err()
	}
	s.mu.Lock()
	sl.held = true
	s.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { s.unlock(key, sl) }) }, nil
}

// unlock delivers what waited for the holder, then frees the slot.
func (s *sequencer) unlock(key string, sl *slot) {
	for {
		s.mu.Lock()
		w := sl.waiting
		sl.waiting = nil
		if len(w) == 0 {
			sl.held = false
			s.forget(key, sl)
			s.mu.Unlock()
			break
		}
		s.mu.Unlock()
		for _, deliver := range w {
			deliver()
		}
	}
	<-sl.token
}

// forget drops one reference to sl. Called with s.mu held.
func (s *sequencer) forget(key string, sl *slot) {
	if sl.refs--; sl.refs == 0 {
		delete(s.slots, key)
	}
}

// after runs deliver now, or once key's holder has published if the slot is held.
// deliver must not block: it runs under s.mu when the slot is free, so that no holder
// can take the slot and publish in between.
func (s *sequencer) after(key string, deliver func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sl := s.slots[key]; sl != nil && sl.held {
		sl.waiting = append(sl.waiting, deliver)
		return
	}
	deliver()
}
