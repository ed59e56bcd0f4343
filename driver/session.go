package driver

import (
	"log/slog"

	"github.com/understudy/understudy/dispatch"
)

// session is what the gateway remembers about one driver across its connections: the
// socket it uses now, and while it has none (a drop, within the grace period) the
// offer the app last heard of. The engine's Store is the truth; the session only knows
// what the app was told, so a resumed socket can be told what changed.
type session struct {
	id   string
	conn *conn // the driver's socket; nil during the grace period
	loc  *dispatch.Point
	// offer is the last offer sent to the app and not answered, revoked or assigned
	// while a socket was open. revoked is why it was revoked while none was.
	offer   *dispatch.Offer
	revoked string
	gen     uint64 // bumped by every offer event, so a resume knows whether one raced it
	// heard is what the app was told of its latest rides, oldest first: each ride's
	// highest version and the ride as it then was. A frame showing an older version
	// of one of them is stale (two replicas' events crossed on the bus) and is not
	// sent, so the app never sees an older state of a ride after a newer one.
	heard []dispatch.Ride
	// busy is the socket whose reader is handling a frame of the app. Meanwhile an
	// offer, and every frame after it, waits in held until the frame is answered: an
	// offer that a complete, decline or available made possible comes after the ride
	// or ack that answers it.
	busy *conn
	held []outFrame

	stop     func() bool   // cancels the grace timer; nil when none runs
	graceID  uint64        // which grace timer is current; 0: none
	expiring chan struct{} // non-nil while the grace expiry takes the driver offline
}

// maxHeard is how many of its latest rides a session remembers for stale checks: a
// driver works one ride at a time, and a stale event is late by milliseconds.
const maxHeard = 4

// hear records that the app is told r and reports true, or reports false when the app
// has heard a newer version of r already. A frame without a ride always passes.
func (s *session) hear(r dispatch.Ride) bool {
	if r.ID == "" || r.Version == 0 {
		return true
	}
	for i, h := range s.heard {
		if h.ID == r.ID {
			if r.Version < h.Version {
				return false
			}
			s.heard[i] = r
			return true
		}
	}
	if len(s.heard) == maxHeard {
		copy(s.heard, s.heard[1:])
		s.heard = s.heard[:maxHeard-1]
	}
	s.heard = append(s.heard, r)
	return true
}

// latest is the newest version of ride id the app was told of.
func (s *session) latest(id string) (dispatch.Ride, bool) {
	for _, h := range s.heard {
		if h.ID == id {
			return h, true
		}
	}
	return dispatch.Ride{}, false
}

func (s *session) stopGrace() {
	if s.stop != nil {
		s.stop()
		s.stop = nil
	}
	s.graceID = 0
}

// resumeSnap is the session as a new socket found it.
type resumeSnap struct {
	resumed bool
	offer   *dispatch.Offer
	revoked string
	gen     uint64
}

// attach makes c its driver's socket, creating the session or taking it over (from a
// dropped socket in its grace period, or from a live one, which the caller closes). It
// reports false while draining.
func (g *Gateway) attach(c *conn) (prev *conn, snap resumeSnap, ok bool) {
	for {
		g.mu.Lock()
		if g.draining {
			g.mu.Unlock()
			return nil, snap, false
		}
		s := g.sessions[c.driverID]
		if s != nil && s.expiring != nil {
			// The grace period just ended: let it take the driver offline first, so
			// the welcome reads the state that results.
			ch := s.expiring
			g.mu.Unlock()
			select {
			case <-ch:
			case <-g.ctx.Done():
				return nil, snap, false
			}
			continue
		}
		if s == nil {
			s = &session{id: c.driverID}
			g.sessions[c.driverID] = s
		} else {
			snap.resumed = true
		}
		s.stopGrace()
		prev = s.conn
		s.conn, c.sess = c, s
		snap.offer, snap.revoked, snap.gen = s.offer, s.revoked, s.gen
		g.conns[c] = struct{}{}
		g.wg.Add(1)
		g.mu.Unlock()
		return prev, snap, true
	}
}

// welcome reads where the driver stands and queues the first frames of c: welcome, the
// outstanding offer if it is still valid, and offer_revoked for an offer the app heard
// of before a drop that no longer stands. Events that arrived since attach follow.
func (g *Gateway) welcome(c *conn, snap resumeSnap) {
	ctx, cancel := g.opContext()
	defer cancel()
	d, err := g.Engine.Connect(ctx, c.driverID)
	if err != nil {
		g.logErr("driver welcome", c.driverID, err)
		code := dispatch.ErrorCode(err).Info().WSClose
		if code == 0 {
			code = dispatch.ECodeInternal.Info().WSClose
		}
		c.closeWith(code, "could not load the driver's state: reconnect")
		return
	}
	w := Welcome{Type: TypeWelcome, DriverID: d.ID, State: d.State, Resumed: snap.resumed}
	var (
		offer *dispatch.Offer
		shown dispatch.Ride // the ride the welcome frames show, if any
	)
	switch d.State {
	case dispatch.DriverEnRoute, dispatch.DriverOnTrip:
		r, err := g.Engine.Ride(ctx, d.RideID)
		if err != nil {
			g.logErr("driver welcome: load ride", c.driverID, err)
			break
		}
		v := NewRide(r, d.Location)
		w.Ride, shown = &v, r
	case dispatch.DriverOffered:
		r, err := g.Engine.Ride(ctx, d.RideID)
		if err != nil {
			g.logErr("driver welcome: load offered ride", c.driverID, err)
			break
		}
		if o := r.Offer; o != nil && o.ID == d.OfferID && g.Now().Before(o.ExpiresAt) {
			offer, shown = o, r
		}
	}
	first := []outFrame{{typ: TypeWelcome, v: w, ride: shown.ID, version: shown.Version}}
	var redelivered, revoked string
	if offer != nil {
		redelivered = offer.ID
		first = append(first, outFrame{typ: TypeOffer, v: NewOffer(*offer), ride: shown.ID, version: shown.Version})
	}
	if p := snap.offer; p != nil && p.ID != redelivered {
		revoked = p.ID
		reason := snap.revoked
		if reason == "" {
			reason = dispatch.ReasonExpired
		}
		first = append(first, outFrame{typ: TypeOfferRevoked, v: OfferRevoked{Type: TypeOfferRevoked, OfferID: p.ID, Reason: reason}})
	}

	g.mu.Lock()
	defer g.mu.Unlock()
	s := c.sess
	if s.loc == nil {
		s.loc = d.Location
	}
	if s.gen == snap.gen { // no offer event since attach: the store read is the latest
		s.offer, s.revoked = offer, ""
	}
	s.hear(shown)
	c.begin(first, redelivered, revoked)
	if snap.resumed {
		g.Logger.Debug("driver resumed", slog.String("driver_id", d.ID), slog.String("state", string(d.State)))
	}
}

// detach forgets c as its driver's socket and, unless draining, starts the grace
// period after which the driver is taken offline.
func (g *Gateway) detach(c *conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.conns, c)
	s := c.sess
	if s == nil || s.conn != c {
		return // replaced, or never attached
	}
	s.conn = nil
	// Offer it nothing it cannot hear until it is back (welcome calls Connect). Done
	// under g.mu, and only for the current socket, so it cannot undo a newer
	// connection's resume.
	g.Engine.Disconnect(c.driverID)
	if g.draining {
		return
	}
	g.graceSeq++
	id := g.graceSeq
	s.graceID = id
	s.stop = g.AfterFunc(g.Config.Grace, func() { g.expire(s, id) })
}

// expire ends a grace period: the driver did not come back, so it goes offline (which
// declines an outstanding offer). A driver with an assigned ride stays as it is; the
// engine refuses to take it offline mid-trip.
func (g *Gateway) expire(s *session, id uint64) {
	g.mu.Lock()
	if g.draining || s.conn != nil || s.graceID != id || g.sessions[s.id] != s {
		g.mu.Unlock()
		return
	}
	s.stop, s.graceID = nil, 0
	s.expiring = make(chan struct{})
	g.wg.Add(1)
	g.mu.Unlock()
	defer g.wg.Done()

	ctx, cancel := g.opContext()
	d, err := g.Engine.SetOffline(ctx, s.id)
	cancel()
	if err != nil {
		g.logErr("driver grace expired: set offline", s.id, err)
	} else {
		g.Logger.Info("driver grace expired", slog.String("driver_id", s.id), slog.String("state", string(d.State)))
	}
	g.mu.Lock()
	delete(g.sessions, s.id)
	close(s.expiring)
	g.mu.Unlock()
}

// setLocation remembers the driver's last position for ride views.
func (g *Gateway) setLocation(s *session, p dispatch.Point) {
	g.mu.Lock()
	if s.loc == nil || *s.loc != p {
		s.loc = &p
	}
	g.mu.Unlock()
}

func (g *Gateway) location(s *session) *dispatch.Point {
	g.mu.Lock()
	defer g.mu.Unlock()
	return s.loc
}

// busy marks c's reader as handling a frame (on) or done with it (off); done, it
// sends what was held meanwhile.
func (g *Gateway) busy(c *conn, on bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := c.sess
	if on {
		if s.busy != c {
			s.held = nil // held for a socket since replaced, whose welcome told the state
		}
		s.busy = c
		return
	}
	if s.busy != c {
		return // a newer socket took over, and is busy itself
	}
	held := s.held
	s.busy, s.held = nil, nil
	if s.conn == c { // else the newer socket's welcome told the state
		for _, f := range held {
			c.send(f)
		}
	}
}

// answerRide answers a trip step with r, the ride as the step left it; ref is the
// frame's. If the app has meanwhile been told a newer version of the ride (a cancel
// that committed after the step was published first), the answer shows that one, so
// the last frame the app has of the ride is its latest state.
func (g *Gateway) answerRide(c *conn, r dispatch.Ride, ref string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := c.sess
	if !s.hear(r) {
		g.Metrics.stale(TypeRide)
		r, _ = s.latest(r.ID)
	}
	c.send(outFrame{typ: TypeRide, v: RideUpdate{Type: TypeRide, Ride: NewRide(r, s.loc), Ref: ref}, ride: r.ID, version: r.Version})
}

// answered forgets offerID (or any offer, when "") once the driver declined it.
func (g *Gateway) answered(s *session, offerID string) {
	g.mu.Lock()
	if s.offer != nil && (offerID == "" || s.offer.ID == offerID) {
		s.offer, s.revoked = nil, ""
		s.gen++
	}
	g.mu.Unlock()
}
