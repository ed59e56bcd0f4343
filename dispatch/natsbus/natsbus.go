// Package natsbus joins the replicas of one region: every engine event one replica
// makes reaches the others over NATS, so a replica can deliver an offer to a driver
// socket it holds whatever replica made the offer, stream a ride's changes to a rider
// it serves, and keep its supply index and timers in step with the region's.
//
// It uses core NATS, not JetStream: an event is only worth something while it is
// fresh, and the Store stays the truth. A lost event costs what the engine's sweep and
// the drivers' next location updates repair.
package natsbus

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/internal/subject"
)

// Engine is what the bus feeds other replicas' events to; dispatch.Replicas implements it.
type Engine interface {
	Apply(dispatch.PeerEvent) // a peer event
	Observe(dispatch.Event)   // a client event
}

var (
	_ dispatch.Peers = (*Bus)(nil)
	_ Engine         = dispatch.Replicas{}
)

// SubjectPrefix starts every subject of the bus: SubjectPrefix + "<region>.<replica>",
// each name one token (see subject.Token).
const SubjectPrefix = "understudy.events."

// Bus publishes one replica's engine events on its region's subject and hands the
// other replicas' events to this replica. Set the exported fields, give it to the
// engine as its Peers, Open it once the engine is open (it feeds the engine from then
// on), and Close it last: Close sends what is queued.
//
// A replica's own events reach its clients directly (the engine's Notifier) and come
// back from NATS only to be dropped by subject, so local delivery never waits on NATS
// and keeps working when NATS does not.
type Bus struct {
	Conn   *nats.Conn
	Region string
	// Engine takes in the other replicas' events (Apply, Observe); nil takes in none.
	Engine Engine
	// Local receives the other replicas' client events (offers, assignments, ride
	// changes) for this replica's driver gateway and rider API; nil delivers none.
	Local   dispatch.Notifier
	Logger  *slog.Logger // nil logs nothing
	Metrics *Metrics     // nil counts nothing
	// ID names this replica on the bus; default random.
	ID string
	// FlushInterval is how long supply and presence changes wait to be coalesced (the
	// last per driver wins) before they are sent. Default 50 ms.
	FlushInterval time.Duration
	// MaxQueue bounds the events waiting to be sent; Forward and Tell drop (and count)
	// what does not fit rather than block the engine. Default 65,536.
	MaxQueue int
	// MaxMessageBytes bounds one NATS message; events are packed into as few as fit.
	// Default 512 KiB, or the server's max payload if smaller.
	MaxMessageBytes int

	subject string
	sub     *nats.Subscription
	kick    chan struct{} // events queued; set under mu
	armed   chan struct{} // supply changes waiting for the flush; set under mu
	cancel  context.CancelFunc
	g       errgroup.Group // the sender

	mu      sync.Mutex
	queue   []wireEvent
	drivers map[string]driverChange
	closed  bool
}

// driverChange is one driver's coalesced replica events: the last presence change and
// the last supply change, sent in that order (see dispatch.Replicas.Apply).
type driverChange struct {
	presence dispatch.PeerEventType // PeerDriverConnected, PeerDriverAway or ""
	supply   bool                   // a supply change is due: in at loc, or out
	in       bool
	loc      dispatch.Point
}

// Open checks the fields, applies defaults, subscribes to the region's subject and
// starts sending: queued events as they come (those queued before Open too), coalesced
// changes every FlushInterval, until Close.
func (b *Bus) Open(context.Context) error {
	if b.Conn == nil || b.Region == "" {
		return errors.New("natsbus: needs a Conn and a Region")
	}
	if b.ID == "" {
		var r [8]byte
		_, _ = rand.Read(r[:]) // crypto/rand.Read never fails
		b.ID = strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(r[:]))
	}
	if b.FlushInterval <= 0 {
		b.FlushInterval = 50 * time.Millisecond
	}
	if b.MaxMessageBytes <= 0 {
		b.MaxMessageBytes = 512 << 10
		if max := int(b.Conn.MaxPayload()); max > 0 && max < b.MaxMessageBytes {
			b.MaxMessageBytes = max
		}
	}
	if b.Logger == nil {
		b.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	region := SubjectPrefix + subject.Token(b.Region)
	b.subject = region + "." + subject.Token(b.ID)
	b.mu.Lock() // Notify may run already: the engine is open
	b.kick = make(chan struct{}, 1)
	b.armed = make(chan struct{}, 1)
	b.mu.Unlock()
	sub, err := b.Conn.Subscribe(region+".*", b.receive)
	if err != nil {
		return fmt.Errorf("subscribe to %s: %w", region, err)
	}
	b.sub = sub
	var ctx context.Context
	ctx, b.cancel = context.WithCancel(context.Background())
	b.g.Go(func() error { return b.run(ctx) })
	return nil
}

// maxQueue is MaxQueue or its default, before Open too.
func (b *Bus) maxQueue() int {
	if b.MaxQueue > 0 {
		return b.MaxQueue
	}
	return 1 << 16
}

// Subject is the subject this replica publishes on.
func (b *Bus) Subject() string { return b.subject }

// Forward queues client event ev for the other replicas' clients and returns at once:
// it never blocks on NATS.
func (b *Bus) Forward(ev dispatch.Event) { b.enqueue(clientWire(ev)) }

// Tell queues peer event ev for the other replicas and returns at once: it never
// blocks on NATS. Supply and presence changes are coalesced per driver for
// FlushInterval.
func (b *Bus) Tell(ev dispatch.PeerEvent) {
	if ev.Type == dispatch.PeerQueue {
		b.enqueue(peerWire(ev))
		return
	}
	b.coalesce(ev)
}

func (b *Bus) enqueue(ev wireEvent) {
	b.mu.Lock()
	if b.closed || len(b.queue) >= b.maxQueue() {
		b.mu.Unlock()
		b.Metrics.dropped(1)
		return
	}
	b.queue = append(b.queue, ev)
	first, kick := len(b.queue) == 1, b.kick
	b.mu.Unlock()
	if first {
		signal(kick) // nil before Open, which looks at the queue itself
	}
}

func (b *Bus) coalesce(ev dispatch.PeerEvent) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		b.Metrics.dropped(1)
		return
	}
	if b.drivers == nil {
		b.drivers = make(map[string]driverChange)
	}
	c := b.drivers[ev.DriverID]
	switch ev.Type {
	case dispatch.PeerSupply:
		c.supply, c.in = true, ev.Location != nil
		if c.in {
			c.loc = *ev.Location
		}
	case dispatch.PeerDriverAway:
		c.presence, c.supply = ev.Type, false // away means out of supply too
	default:
		c.presence = ev.Type
	}
	b.drivers[ev.DriverID] = c
	first, armed := len(b.drivers) == 1, b.armed
	b.mu.Unlock()
	if first {
		signal(armed)
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// run sends queued events as they come and coalesced changes every FlushInterval,
// until ctx ends; then it sends what is left and returns.
func (b *Bus) run(ctx context.Context) error {
	var (
		flush *time.Timer
		tick  <-chan time.Time
	)
	defer func() {
		if flush != nil {
			flush.Stop()
		}
	}()
	// What was queued before Open signalled nobody.
	signal(b.kick)
	signal(b.armed)
	for {
		select {
		case <-ctx.Done():
			evs, changes := b.takeAll()
			b.send(evs)
			b.send(changes)
			return nil
		case <-b.kick:
			b.send(b.takeEvents())
		case <-b.armed:
			if tick == nil {
				flush = time.NewTimer(b.FlushInterval)
				tick = flush.C
			}
		case <-tick:
			tick = nil
			// The events queued before these changes go first: a driver freed by a
			// cancel is back in supply only after the cancel was published, and the
			// other replicas must hear it in that order, or one of them could offer
			// the driver a ride before its gateway told it the last one is over.
			evs, changes := b.takeAll()
			b.send(evs)
			b.send(changes)
		}
	}
}

func (b *Bus) takeEvents() []wireEvent {
	b.mu.Lock()
	defer b.mu.Unlock()
	evs := b.queue
	b.queue = nil
	return evs
}

// takeAll takes the queued events and the coalesced changes at once, so that every
// event queued before one of the changes is among the events.
func (b *Bus) takeAll() (evs, changes []wireEvent) {
	b.mu.Lock()
	evs, b.queue = b.queue, nil
	drivers := b.drivers
	b.drivers = nil
	b.mu.Unlock()
	return evs, driverEvents(drivers)
}

// driverEvents turns coalesced changes into events: presence, then supply, per driver.
func driverEvents(changes map[string]driverChange) []wireEvent {
	evs := make([]wireEvent, 0, 2*len(changes))
	for id, c := range changes {
		if c.presence != "" {
			evs = append(evs, wireEvent{Type: string(c.presence), Peer: true, DriverID: id})
		}
		if c.supply {
			ev := wireEvent{Type: string(dispatch.PeerSupply), Peer: true, DriverID: id}
			if c.in {
				ev.Location = &c.loc
			}
			evs = append(evs, ev)
		}
	}
	return evs
}

// send publishes evs, in order, packed as JSON arrays into messages of at most
// MaxMessageBytes (an event larger than that goes alone).
func (b *Bus) send(evs []wireEvent) {
	if len(evs) == 0 {
		return
	}
	msg := make([]byte, 0, 4096)
	n := 0
	publish := func() {
		if n == 0 {
			return
		}
		msg = append(msg, ']')
		if err := b.Conn.Publish(b.subject, msg); err != nil {
			b.Metrics.dropped(n)
			b.Logger.Warn("publish events to the other replicas", slog.Int("events", n), slog.Any("err", err))
		} else {
			b.Metrics.sent(n)
		}
		msg, n = msg[:0], 0
	}
	for _, ev := range evs {
		data, err := json.Marshal(ev)
		if err != nil { // cannot happen: every field encodes
			b.Metrics.dropped(1)
			b.Logger.Error("encode event", slog.String("type", string(ev.Type)), slog.Any("err", err))
			continue
		}
		if n > 0 && len(msg)+1+len(data)+1 > b.MaxMessageBytes {
			publish()
		}
		if n == 0 {
			msg = append(msg, '[')
		} else {
			msg = append(msg, ',')
		}
		msg = append(msg, data...)
		n++
	}
	publish()
}

// receive takes in a message from the region's subject: another replica's events go
// to the engine and, if they are for clients, to Local; this replica's own are dropped.
func (b *Bus) receive(m *nats.Msg) {
	if m.Subject == b.subject {
		return
	}
	var wire []wireEvent
	if err := json.Unmarshal(m.Data, &wire); err != nil {
		b.Logger.Warn("undecodable events from another replica", slog.String("subject", m.Subject), slog.Any("err", err))
		return
	}
	b.Metrics.received(len(wire))
	for _, w := range wire {
		if w.Peer {
			if b.Engine != nil {
				b.Engine.Apply(w.peerEvent())
			}
			continue
		}
		ev := w.event()
		if b.Engine != nil {
			b.Engine.Observe(ev)
		}
		if b.Local != nil {
			b.Local.Notify(ev)
		}
	}
}

// Close sends what is queued, stops sending and unsubscribes: other replicas' events
// are no longer taken in. Events queued after Close are dropped.
func (b *Bus) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	if b.sub == nil { // never opened
		return nil
	}
	b.cancel()
	_ = b.g.Wait() // run returns no error
	if !b.sub.IsValid() {
		return nil // closed before
	}
	if err := b.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		return fmt.Errorf("unsubscribe from %s: %w", b.sub.Subject, err)
	}
	return nil
}

// wireEvent is a dispatch.Event, or a dispatch.PeerEvent (Peer set), on the bus.
type wireEvent struct {
	Type     string          `json:"type"`
	Peer     bool            `json:"peer,omitempty"`
	DriverID string          `json:"driver_id,omitempty"`
	Ride     *dispatch.Ride  `json:"ride,omitempty"`
	Offer    *dispatch.Offer `json:"offer,omitempty"`
	Reason   string          `json:"reason,omitempty"`
	At       time.Time       `json:"at,omitzero"`
	Location *dispatch.Point `json:"location,omitempty"`
	Queue    []string        `json:"queue,omitempty"`
}

func clientWire(ev dispatch.Event) wireEvent {
	w := wireEvent{Type: string(ev.Type), DriverID: ev.DriverID, Offer: ev.Offer, Reason: ev.Reason, At: ev.At}
	if ev.Ride.ID != "" {
		w.Ride = &ev.Ride
	}
	return w
}

func peerWire(ev dispatch.PeerEvent) wireEvent {
	return wireEvent{Type: string(ev.Type), Peer: true, DriverID: ev.DriverID, Location: ev.Location, Queue: ev.Queue, At: ev.At}
}

func (w wireEvent) event() dispatch.Event {
	ev := dispatch.Event{Type: dispatch.EventType(w.Type), DriverID: w.DriverID, Offer: w.Offer, Reason: w.Reason, At: w.At}
	if w.Ride != nil {
		ev.Ride = *w.Ride
	}
	return ev
}

func (w wireEvent) peerEvent() dispatch.PeerEvent {
	return dispatch.PeerEvent{Type: dispatch.PeerEventType(w.Type), DriverID: w.DriverID, Location: w.Location,
		Queue: w.Queue, At: w.At}
}
