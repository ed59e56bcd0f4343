package rider

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/understudy/understudy/dispatch"
)

// hub fans ride changes out to the event streams following each ride. publish never
// blocks: each subscriber has a bounded queue that drops its oldest entry when full,
// so the newest state of the ride always gets through.
//
// Lock order: hub.mu, then subscriber.mu.
type hub struct {
	buffer      int
	maxPerRider int
	metrics     *Metrics

	mu       sync.RWMutex
	byRide   map[string]map[*subscriber]struct{}
	perRider map[string]int
	closed   bool
	done     chan struct{} // closed by close: every stream ends
	streams  sync.WaitGroup
}

func newHub(buffer, maxPerRider int, m *Metrics) *hub {
	return &hub{
		buffer: buffer, maxPerRider: maxPerRider, metrics: m,
		byRide:   make(map[string]map[*subscriber]struct{}),
		perRider: make(map[string]int),
		done:     make(chan struct{}),
	}
}

// subscriber is one event stream's queue of ride states.
type subscriber struct {
	rideID, rider string
	ready         chan struct{} // signalled (capacity 1) when queue gains an entry

	mu    sync.Mutex
	queue []dispatch.Ride
	moved bool // the ride's area is served by another region now: end the stream
}

// subscribe starts queueing the changes of rideID for a stream of rider.
func (h *hub) subscribe(rideID, rider string) (*subscriber, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, dispatch.ErrClosed
	}
	if h.perRider[rider] >= h.maxPerRider {
		return nil, &dispatch.Error{Code: dispatch.ECodeRateLimited, RetryAfterS: 5,
			Message: fmt.Sprintf("too many open event streams (at most %d)", h.maxPerRider)}
	}
	s := &subscriber{rideID: rideID, rider: rider, ready: make(chan struct{}, 1)}
	subs := h.byRide[rideID]
	if subs == nil {
		subs = make(map[*subscriber]struct{})
		h.byRide[rideID] = subs
	}
	subs[s] = struct{}{}
	h.perRider[rider]++
	h.streams.Add(1)
	h.metrics.subscribed(1)
	return s, nil
}

func (h *hub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	subs := h.byRide[s.rideID]
	if _, ok := subs[s]; !ok {
		return
	}
	delete(subs, s)
	if len(subs) == 0 {
		delete(h.byRide, s.rideID)
	}
	if h.perRider[s.rider]--; h.perRider[s.rider] <= 0 {
		delete(h.perRider, s.rider)
	}
	h.streams.Done()
	h.metrics.subscribed(-1)
}

// publish queues r for every stream following it.
func (h *hub) publish(r dispatch.Ride) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for s := range h.byRide[r.ID] {
		if s.push(r, h.buffer) {
			h.metrics.droppedEvent()
		}
	}
}

// move ends the streams of ride id: another region serves its area now, and the
// client, asking again, is sent there (421) and resumes with Last-Event-ID.
func (h *hub) move(id string) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for s := range h.byRide[id] {
		s.mu.Lock()
		s.moved = true
		s.mu.Unlock()
		select {
		case s.ready <- struct{}{}:
		default:
		}
	}
}

// hasMoved reports whether the stream's ride was moved to another region.
func (s *subscriber) hasMoved() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.moved
}

// len is the number of open streams.
func (h *hub) len() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	n := 0
	for _, c := range h.perRider {
		n += c
	}
	return n
}

// close ends every stream and refuses new ones, then waits for the streams to
// finish or ctx to end.
func (h *hub) close(ctx context.Context) error {
	h.mu.Lock()
	if !h.closed {
		h.closed = true
		close(h.done)
	}
	h.mu.Unlock()
	finished := make(chan struct{})
	go func() {
		h.streams.Wait()
		close(finished)
	}()
	select {
	case <-finished:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("rider event streams still open: %w", ctx.Err())
	}
}

// push queues r, dropping the oldest entry when the queue is full; it reports
// whether it dropped one.
func (s *subscriber) push(r dispatch.Ride, limit int) (dropped bool) {
	s.mu.Lock()
	if len(s.queue) >= limit {
		s.queue = slices.Delete(s.queue, 0, len(s.queue)-limit+1)
		dropped = true
	}
	s.queue = append(s.queue, r)
	s.mu.Unlock()
	select {
	case s.ready <- struct{}{}:
	default:
	}
	return dropped
}

// take empties the queue and returns its rides in version order.
func (s *subscriber) take() []dispatch.Ride {
	s.mu.Lock()
	q := s.queue
	s.queue = nil
	s.mu.Unlock()
	slices.SortStableFunc(q, func(a, b dispatch.Ride) int {
		switch {
		case a.Version < b.Version:
			return -1
		case a.Version > b.Version:
			return 1
		}
		return 0
	})
	return q
}

// rideEvents is GET /v1/rides/{id}/events: a text/event-stream whose first event is
// the ride's current state and then one event per change of its status or driver.
// While a driver is on the way or on board, every LocationInterval the stream also
// reads the driver's position and, if it moved since the stream last showed it, sends
// a location event: the same ride with the new driver.location.
// Changes come from the engine's notifications; each heartbeat also re-reads the
// ride, so a change no notification told of still arrives within one heartbeat.
// Each event's id is the ride's version; a client resuming with Last-Event-ID gets
// only states newer than that (an id above the ride's version starts over). The
// stream ends after a final status; a client that already has the final state gets
// 204, which tells EventSource to stop reconnecting. HEAD answers the same status and
// headers at once, and holds no stream.
func (a *API) rideEvents(w http.ResponseWriter, r *http.Request, id dispatch.Identity) error {
	ctx := r.Context()
	ride, err := a.ownedRide(ctx, id, r.PathValue("id"))
	if err != nil {
		return err
	}
	last, err := lastEventID(r)
	if err != nil {
		return err
	}
	if r.Method == http.MethodHead {
		// The headers a GET would answer (204 as below), and nothing more: no stream
		// is held.
		if ride.Status.Final() && ride.Version == last {
			w.WriteHeader(http.StatusNoContent)
			return nil
		}
		setStreamHeaders(w.Header())
		w.WriteHeader(http.StatusOK)
		return nil
	}
	sub, err := a.hub.subscribe(ride.ID, string(id.Role)+":"+id.Subject)
	if err != nil {
		return err
	}
	defer a.hub.unsubscribe(sub)
	// Read again now that changes queue up, so none falls between read and subscribe.
	if ride, err = a.Engine.Ride(ctx, ride.ID); err != nil {
		return err
	}
	if last > ride.Version {
		// An id this ride never had (say, from another region before a takeover
		// rebuilt the ride): the client's history is not ours, so start over.
		last = 0
	}
	if ride.Status.Final() && ride.Version <= last {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}

	// A stream outlives the server's write timeout: each write gets its own instead.
	st := &stream{w: w, rc: http.NewResponseController(w), timeout: a.Config.StreamWriteTimeout, sent: last}
	st.extend()
	setStreamHeaders(w.Header())
	w.WriteHeader(http.StatusOK)
	if ride.Version > last {
		if err := st.send(a.view(ctx, ride), ride.Version); err != nil {
			return nil // the client went away
		}
	} else {
		// The client has this state; where its driver is now comes with the next
		// location event.
		st.track(a.view(ctx, ride))
		st.loc = nil
		if err := st.rc.Flush(); err != nil {
			return nil
		}
	}
	if ride.Status.Final() {
		return nil
	}
	heartbeat := time.NewTicker(a.Config.Heartbeat)
	defer heartbeat.Stop()
	locations := time.NewTicker(a.Config.LocationInterval)
	defer locations.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.hub.done:
			return nil
		case <-locations.C:
			// While a driver is on the way or on board, its new position, if any.
			if st.driver == "" {
				continue
			}
			d, err := a.Engine.Driver(ctx, st.driver)
			if err != nil || d.Location == nil || (st.loc != nil && *st.loc == *d.Location) {
				continue
			}
			if err := st.sendLocation(*d.Location); err != nil {
				return nil
			}
		case <-heartbeat.C:
			// A safety net for changes this process was not told about (another
			// replica committed them): re-read the ride; a newer state is the beat.
			cur, err := a.Engine.Ride(ctx, ride.ID)
			if dispatch.RedirectOf(err) != nil {
				return nil // served elsewhere now: the client asks again, and is sent there
			}
			if err == nil && cur.Version > st.sent && st.changed(cur) {
				if err := st.send(a.view(ctx, cur), cur.Version); err != nil || cur.Status.Final() {
					return nil
				}
				continue
			}
			if err := st.comment("keep-alive"); err != nil {
				return nil
			}
		case <-sub.ready:
			if sub.hasMoved() {
				return nil
			}
			for _, next := range sub.take() {
				if next.Version <= st.sent || !st.changed(next) {
					continue
				}
				if err := st.send(a.view(ctx, next), next.Version); err != nil {
					return nil
				}
				if next.Status.Final() {
					return nil
				}
			}
		}
	}
}

// setStreamHeaders sets the headers of an event stream's answer.
func setStreamHeaders(h http.Header) {
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // tell nginx-like proxies not to buffer
}

// stream writes server-sent events.
type stream struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration // each write's deadline
	sent    uint64        // version of the last event sent (or the client's Last-Event-ID)
	// what the last event sent showed, to skip versions the rider cannot tell apart
	status dispatch.RideStatus
	driver string
	any    bool
	// the ride as last sent and the driver position it showed, for location events
	view Ride
	loc  *dispatch.Point
}

// changed reports whether r differs from the last event sent in what a rider sees.
func (st *stream) changed(r dispatch.Ride) bool {
	return !st.any || r.Status != st.status || r.DriverID != st.driver
}

// extend gives the next write its own deadline (ignored where the connection has none).
func (st *stream) extend() { _ = st.rc.SetWriteDeadline(time.Now().Add(st.timeout)) }

func (st *stream) send(v Ride, version uint64) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	st.extend()
	if _, err := fmt.Fprintf(st.w, "id: %d\ndata: %s\n\n", version, b); err != nil {
		return err
	}
	st.sent, st.status, st.any = version, v.Status, true
	st.track(v)
	return st.rc.Flush()
}

// track makes v the ride that location events show, with the driver position it has.
func (st *stream) track(v Ride) {
	st.view, st.driver, st.loc = v, "", nil
	if v.Driver != nil && !v.Status.Final() {
		st.driver, st.loc = v.Driver.ID, v.Driver.Location
	}
}

// sendLocation sends the ride as last sent with its driver at p, as a location event.
// It has no id: Last-Event-ID stays the version of the last ride event, so a resumed
// stream neither skips nor repeats a change of the ride.
func (st *stream) sendLocation(p dispatch.Point) error {
	v := st.view
	v.Driver = &Driver{ID: st.driver, Location: &p}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	st.extend()
	if _, err := fmt.Fprintf(st.w, "event: location\ndata: %s\n\n", b); err != nil {
		return err
	}
	st.loc = &p
	return st.rc.Flush()
}

func (st *stream) comment(text string) error {
	st.extend()
	if _, err := fmt.Fprintf(st.w, ": %s\n\n", text); err != nil {
		return err
	}
	return st.rc.Flush()
}

// lastEventID parses the Last-Event-ID header: absent or empty is 0.
func lastEventID(r *http.Request) (uint64, error) {
	v := strings.TrimSpace(r.Header.Get("Last-Event-ID"))
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, invalid("Last-Event-ID %q: want the id of an event this stream sent", dispatch.Clip(v, 32))
	}
	return n, nil
}
