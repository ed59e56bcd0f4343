// Package driver is the driver app's gateway: the websocket at GET /v1/driver/ws of
// the client contract. It checks the driver's token before the upgrade, turns frames
// into dispatch.Engine calls, delivers the engine's offers and assignments, and keeps a
// dropped driver's session through a grace period so the app resumes where it was.
//
// Package driver/client is the Go side of the same protocol.
package driver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/httproute"
	"github.com/understudy/understudy/dispatch/problem"
)

// Path is where the gateway is mounted.
const Path = "/v1/driver/ws"

// Close codes the gateway ends a socket with, beyond those of the dispatch error table
// (1008 too many frames, 1009 frame too large, 1011 internal, 1012 service restart).
const (
	// CloseReplaced: a newer connection for the same driver took over. Do not redial.
	CloseReplaced = 4000
	// CloseTooSlow: the app did not read fast enough and its send queue overflowed.
	// Redial: the welcome frame tells where the driver stands.
	CloseTooSlow = 4001
	// CloseReconnect: the driver is in an area another region serves; the reconnect
	// frame before the close says where. Dial that URL with the same token.
	CloseReconnect = 4002
	// CloseInvalidUTF8: a text frame was not valid UTF-8 (RFC 6455, 8.1). Fix the
	// sender.
	CloseInvalidUTF8 = websocket.CloseInvalidFramePayloadData
)

// Engine is what the gateway needs from dispatch; dispatch.Drivers implements it.
type Engine interface {
	Connect(ctx context.Context, driverID string) (dispatch.Driver, error)
	Disconnect(driverID string)
	UpdateLocation(ctx context.Context, driverID string, p dispatch.Point) error
	SetAvailable(ctx context.Context, driverID string) (dispatch.Driver, error)
	SetOffline(ctx context.Context, driverID string) (dispatch.Driver, error)
	Accept(ctx context.Context, driverID, offerID string) (dispatch.Ride, error)
	Decline(ctx context.Context, driverID, offerID string) error
	Arrived(ctx context.Context, driverID, rideID string) (dispatch.Ride, error)
	Start(ctx context.Context, driverID, rideID string) (dispatch.Ride, error)
	Complete(ctx context.Context, driverID, rideID string) (dispatch.Ride, error)
	Ride(ctx context.Context, id string) (dispatch.Ride, error)
}

var (
	_ Engine            = dispatch.Drivers{}
	_ dispatch.Notifier = (*Gateway)(nil)
	_ http.Handler      = (*Gateway)(nil)
)

// Gateway serves driver sockets. Set the exported fields, Open it, mount its Routes,
// pass it to the engine as a Notifier; at shutdown Drain it, then Close it.
type Gateway struct {
	Engine   Engine
	Verifier dispatch.Verifier
	// AllowedOrigins lists the Origins a browser may connect from ("*" for any).
	// Requests without an Origin (native apps) and same-host Origins are always allowed.
	AllowedOrigins []string
	Logger         *slog.Logger // nil logs nothing
	Metrics        *Metrics     // nil counts nothing

	// Config tunes the sockets: timeouts, frame limits, queue and buffers. Start from
	// DefaultConfig; Open refuses one that does not Validate.
	Config Config

	// Now is the clock for offer expiry on resume; nil means time.Now.
	Now func() time.Time
	// AfterFunc runs f after d and returns a func that cancels it (reporting whether it
	// stopped f from running); nil means time.AfterFunc. Tests inject a fake.
	AfterFunc func(d time.Duration, f func()) (stop func() bool)

	upgrader websocket.Upgrader
	bufs     sync.Pool     // *[]byte of MaxFrameBytes+1, for reading frames
	logs     *rate.Limiter // refusals and policy closes logged at Info/Warn; the rest at Debug
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup // one per attached conn and per running grace expiry

	// mu guards the fields below. Lock order: Gateway.mu, then conn.mu. It is never
	// held across network or engine I/O.
	mu       sync.Mutex
	sessions map[string]*session
	conns    map[*conn]struct{}
	draining bool
	graceSeq uint64
}

// Open checks the dependencies and the configuration, and prepares the gateway. The
// gateway starts goroutines only for the sockets it admits, which Drain and Close end.
func (g *Gateway) Open(context.Context) error {
	if g.Engine == nil || g.Verifier == nil {
		return errors.New("driver gateway needs an Engine and a Verifier")
	}
	if err := g.Config.Validate(); err != nil {
		return fmt.Errorf("driver gateway: %w", err)
	}
	g.logs = rate.NewLimiter(logRate, logBurst)
	if g.Logger == nil {
		g.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if g.Now == nil {
		g.Now = time.Now
	}
	if g.AfterFunc == nil {
		g.AfterFunc = func(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }
	}
	size := g.Config.MaxFrameBytes + 1
	g.bufs.New = func() any { b := make([]byte, size); return &b }
	g.upgrader = websocket.Upgrader{
		HandshakeTimeout: g.Config.WriteTimeout,
		ReadBufferSize:   g.Config.ReadBufferSize,
		WriteBufferSize:  g.Config.WriteBufferSize,
		WriteBufferPool:  &sync.Pool{},
		CheckOrigin:      func(*http.Request) bool { return true }, // admit checked it
		Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
			code := dispatch.ECodeInvalid
			if status >= 500 {
				code = dispatch.ECodeInternal
			}
			g.refuse(w, r, dispatch.Errorf(code, "websocket handshake: %v", reason))
		},
	}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	g.sessions = make(map[string]*session)
	g.conns = make(map[*conn]struct{})
	return nil
}

// Routes lists what the gateway serves: the driver socket.
func (g *Gateway) Routes() []httproute.Route {
	return []httproute.Route{{Method: http.MethodGet, Path: Path, Handler: g}}
}

// ServeHTTP admits a driver (origin, token, role) and upgrades to the socket.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, proto, err := g.admit(r)
	if err != nil {
		g.refuse(w, r, err)
		return
	}
	var hdr http.Header
	if proto != "" {
		hdr = http.Header{"Sec-Websocket-Protocol": {proto}}
	}
	ws, err := g.upgrader.Upgrade(w, r, hdr)
	if err != nil {
		return // the upgrader answered
	}
	g.serve(newConn(g, ws, id.Subject))
}

func (g *Gateway) refuse(w http.ResponseWriter, r *http.Request, err error) {
	code := dispatch.ErrorCode(err)
	g.Metrics.refuse(string(code))
	g.Logger.Debug("driver handshake refused", slog.String("code", string(code)), slog.String("reason", err.Error()),
		slog.String("remote", r.RemoteAddr))
	problem.Write(w, r, err)
}

// Connected is the number of open driver sockets.
func (g *Gateway) Connected() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.conns)
}

// Notify delivers a driver event to its driver's socket. It never blocks: the frame
// joins the socket's bounded queue, and a socket whose queue is full is closed (its
// driver resumes from the welcome frame).
func (g *Gateway) Notify(ev dispatch.Event) {
	switch ev.Type {
	case dispatch.EventOffer, dispatch.EventOfferRevoked, dispatch.EventAssigned, dispatch.EventRideCancelled,
		dispatch.EventDriverOffline, dispatch.EventAreaMoved:
	default:
		return
	}
	if ev.DriverID == "" {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.sessions[ev.DriverID]
	if s == nil {
		return // not connected here: the welcome of its next connection carries its state
	}
	if ev.Type == dispatch.EventAreaMoved {
		// The driver's ride is served by another region now: it goes there, and
		// resumes its ride from that region's welcome.
		if s.conn != nil && ev.To != nil {
			s.conn.moveTo(*ev.To, "area_moved")
		}
		return
	}
	if ev.Type != dispatch.EventDriverOffline && !s.hear(ev.Ride) {
		// Another replica's event that crossed a newer one on the bus: the app heard
		// a later state of this ride already, and must not be shown an older one.
		g.Metrics.stale(string(ev.Type))
		g.Logger.Debug("driver event older than what the driver heard: not sent", slog.String("driver_id", ev.DriverID),
			slog.String("type", string(ev.Type)), slog.String("ride_id", ev.Ride.ID), slog.Uint64("version", ev.Ride.Version))
		return
	}
	f := outFrame{ride: ev.Ride.ID, version: ev.Ride.Version}
	switch ev.Type {
	case dispatch.EventOffer:
		if ev.Offer == nil {
			return
		}
		s.offer, s.revoked = ev.Offer, ""
		s.gen++
		f.typ, f.v = TypeOffer, NewOffer(*ev.Offer)
	case dispatch.EventOfferRevoked:
		if ev.Offer == nil {
			return
		}
		if s.offer != nil && s.offer.ID == ev.Offer.ID {
			if s.conn == nil {
				s.revoked = ev.Reason // told on resume
			} else {
				s.offer = nil
			}
		}
		s.gen++
		f.typ, f.v = TypeOfferRevoked, OfferRevoked{Type: TypeOfferRevoked, OfferID: ev.Offer.ID, Reason: ev.Reason}
	case dispatch.EventAssigned:
		s.offer, s.revoked = nil, ""
		s.gen++
		f.typ, f.v = TypeAssigned, Assigned{Type: TypeAssigned, Ride: NewRide(ev.Ride, s.loc)}
	case dispatch.EventRideCancelled:
		f.typ, f.v = TypeRideCancelled, RideCancelled{Type: TypeRideCancelled, RideID: ev.Ride.ID, Ride: NewRide(ev.Ride, s.loc)}
	case dispatch.EventDriverOffline:
		f.typ, f.v = TypeState, State{Type: TypeState, State: dispatch.DriverOffline, Reason: ev.Reason}
	}
	switch {
	case s.conn == nil:
	case s.busy == s.conn && (ev.Type == dispatch.EventOffer || len(s.held) > 0):
		s.held = append(s.held, f) // after the answer to the frame being handled
	default:
		s.conn.send(f)
	}
}

// Drain tells every connected driver to reconnect (close 1012, "service restart") and
// waits for the sockets to close. When ctx ends first it drops the rest and returns
// ctx's error. Sessions are not taken offline: the drivers resume elsewhere. New
// handshakes are refused with 503 from the moment Drain starts. Drain may be called
// more than once.
func (g *Gateway) Drain(ctx context.Context) error {
	g.mu.Lock()
	g.draining = true
	for _, s := range g.sessions {
		s.stopGrace()
	}
	conns := make([]*conn, 0, len(g.conns))
	for c := range g.conns {
		conns = append(conns, c)
	}
	g.mu.Unlock()
	restart := dispatch.ECodeUnavailable.Info().WSClose
	for _, c := range conns {
		c.closeWith(restart, "service restart: reconnect")
	}
	done := make(chan struct{})
	go func() {
		g.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		g.cancel()
		return nil
	case <-ctx.Done():
	}
	g.cancel() // ends engine calls in flight
	g.mu.Lock()
	conns = conns[:0]
	for c := range g.conns {
		conns = append(conns, c)
	}
	g.mu.Unlock()
	for _, c := range conns {
		c.abort()
	}
	<-done
	return fmt.Errorf("drain driver sockets: %d still open at the deadline: %w", len(conns), ctx.Err())
}

// Close drops every socket still open, at once, and waits for them: after Drain, what
// its deadline left.
func (g *Gateway) Close() error {
	if g.cancel == nil { // never opened
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = g.Drain(ctx)
	return nil
}

// serve runs one admitted socket: attach it to its driver's session, start its writer,
// send the welcome, then read until it ends.
func (g *Gateway) serve(c *conn) {
	prev, snap, ok := g.attach(c)
	if !ok {
		c.rejectDraining()
		return
	}
	if prev != nil {
		prev.closeWith(CloseReplaced, "replaced by a newer connection")
	}
	g.Metrics.connect(1)
	go c.writeLoop()
	g.welcome(c, snap)
	go c.readLoop()
}

func (g *Gateway) opContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(g.ctx, g.Config.OpTimeout)
}

// logErr logs an engine error: internal ones as errors, refusals at Info (sampled).
func (g *Gateway) logErr(msg, driverID string, err error, attrs ...slog.Attr) {
	level := slog.LevelInfo
	if dispatch.ErrorCode(err) == dispatch.ECodeInternal {
		level = slog.LevelError
	}
	g.logSampled(level, msg, append([]slog.Attr{slog.String("driver_id", driverID),
		slog.String("code", string(dispatch.ErrorCode(err))), slog.Any("err", err)}, attrs...)...)
}

// Refusals and policy closes are logged at their level up to logBurst at once and
// logRate a second after that; beyond, at Debug, so a flood of bad frames cannot
// flood the log (the metrics count every one).
const (
	logRate  = 5
	logBurst = 50
)

// logSampled logs at level, or at Debug when over the sampling rate. Errors are
// always logged at their level.
func (g *Gateway) logSampled(level slog.Level, msg string, attrs ...slog.Attr) {
	if level < slog.LevelError && !g.logs.Allow() {
		level = slog.LevelDebug
	}
	g.Logger.LogAttrs(context.Background(), level, msg, attrs...)
}
