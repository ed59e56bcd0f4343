package driver

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/understudy/understudy/dispatch"
)

// conn is one driver socket. Two goroutines run it: readLoop (frames in, engine calls)
// and writeLoop, the only one that writes to the socket. Everything else (events,
// answers, pongs, close requests) hands the writer work through the queue under mu.
type conn struct {
	g        *Gateway
	ws       *websocket.Conn
	driverID string
	sess     *session // set by attach, under Gateway.mu; fixed afterwards
	// pace is how fast the reader takes frames (FrameReadRate): it waits for a token
	// before reading the next one, and TCP flow control slows the sender meanwhile.
	// flood is the socket's frame budget (FrameRate, averaged over FloodWindow): empty
	// means the app keeps sending above it, and the socket is closed with 1008.
	pace  *rate.Limiter
	flood *rate.Limiter
	// elsewhere counts the location frames in a row that fell in an area another
	// region serves (the reader's alone: Config.BorderLocations).
	elsewhere int

	mu      sync.Mutex
	queue   []outFrame // frames for the writer, in order
	ready   bool       // the welcome heads queue: the writer may write
	pingDue bool       // the ping timer fired
	pong    *string    // payload of the latest unanswered ping
	closing *closeReq  // set once; the writer sends it and stops
	ended   bool       // readLoop has ended
	endCode int        // the close code that ended the socket, for metrics
	pinger  *time.Timer
	// wake tells the writer there is work. The writer blocks on this one channel only:
	// an idle socket costs one parked receive, not a select over several channels.
	wake  chan struct{}
	wdone chan struct{} // closed when writeLoop ends
}

// outFrame is a frame waiting for the writer; v is JSON-encoded there. A frame that
// shows a ride names it and the ride's version, so a welcome can drop the older
// frames queued behind it.
type outFrame struct {
	typ     string
	v       any
	ride    string
	version uint64
}

// maxCloseReason is the longest close reason a control frame carries.
const maxCloseReason = 123

type closeReq struct {
	code   int
	reason string
	sent   bool
}

func newConn(g *Gateway, ws *websocket.Conn, driverID string) *conn {
	return &conn{
		g: g, ws: ws, driverID: driverID,
		pace:  rate.NewLimiter(g.Config.FrameReadRate, g.Config.FrameBurst),
		flood: rate.NewLimiter(g.Config.FrameRate, g.Config.FrameBurst+int(float64(g.Config.FrameRate)*g.Config.FloodWindow.Seconds())),
		wake:  make(chan struct{}, 1),
		wdone: make(chan struct{}),
	}
}

func (c *conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// send queues f. A full queue means the app is not reading: the socket is closed with
// CloseTooSlow and the app resumes from a fresh welcome.
func (c *conn) send(f outFrame) {
	c.mu.Lock()
	if c.closing != nil {
		c.mu.Unlock()
		return
	}
	if len(c.queue) >= c.g.Config.SendQueue {
		c.queue = nil
		c.closing = &closeReq{code: CloseTooSlow, reason: "send queue overflowed: reconnect to resume"}
	} else {
		c.queue = append(c.queue, f)
	}
	c.mu.Unlock()
	c.signal()
}

// begin puts the welcome frames at the head of the queue and lets the writer start.
// Queued events that repeat them (the redelivered offer, the revoked one) are dropped,
// and so are those showing an older version of a ride the welcome frames show.
// Called with Gateway.mu held.
func (c *conn) begin(first []outFrame, redelivered, revoked string) {
	shown := make(map[string]uint64, 2)
	for _, f := range first {
		if f.ride != "" {
			shown[f.ride] = max(shown[f.ride], f.version)
		}
	}
	c.mu.Lock()
	for _, f := range c.queue {
		if v, ok := shown[f.ride]; ok && f.version < v {
			continue
		}
		switch v := f.v.(type) {
		case Offer:
			if v.OfferID == redelivered {
				continue
			}
		case OfferRevoked:
			if v.OfferID == revoked {
				continue
			}
		}
		first = append(first, f)
	}
	c.queue, c.ready = first, true
	c.mu.Unlock()
	c.signal()
}

// closeWith asks the writer to send a close frame and end the socket. The first request
// wins.
func (c *conn) closeWith(code int, reason string) {
	for len(reason) > maxCloseReason {
		_, size := utf8.DecodeLastRuneInString(reason)
		reason = reason[:len(reason)-size]
	}
	c.mu.Lock()
	if c.closing == nil {
		c.closing = &closeReq{code: code, reason: reason}
	}
	c.mu.Unlock()
	c.signal()
}

func (c *conn) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing != nil
}

// abort drops the TCP connection without a close handshake.
func (c *conn) abort() { _ = c.ws.NetConn().Close() }

// rejectDraining ends a socket that was upgraded while the gateway began to drain.
func (c *conn) rejectDraining() {
	code := dispatch.ECodeUnavailable.Info().WSClose
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, "service restart: reconnect"),
		time.Now().Add(c.g.Config.WriteTimeout))
	c.abort()
	c.g.Metrics.closed(code)
}

// work is what the writer should do next.
type work struct {
	frames []outFrame
	ping   bool
	pong   *string
	close  *closeReq
	ended  bool // the reader has ended: answer its close, if any, and stop
}

func (c *conn) take() work {
	c.mu.Lock()
	defer c.mu.Unlock()
	var w work
	if c.ready && len(c.queue) > 0 {
		w.frames, c.queue = c.queue, nil
	}
	w.ping, c.pingDue = c.pingDue, false
	w.pong, c.pong = c.pong, nil
	if c.closing != nil && !c.closing.sent {
		c.closing.sent = true
		w.close = c.closing
		c.endCode = w.close.code
	}
	w.ended = c.ended
	return w
}

// pingTick runs on the ping timer: ask the writer for a ping and re-arm.
func (c *conn) pingTick() {
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return
	}
	c.pingDue = true
	c.pinger.Reset(c.g.Config.PingInterval)
	c.mu.Unlock()
	c.signal()
}

// writeLoop is the socket's only writer: queued frames, pongs, pings every
// PingInterval, and the close frame.
func (c *conn) writeLoop() {
	defer close(c.wdone)
	g := c.g
	c.mu.Lock()
	if !c.ended {
		c.pinger = time.AfterFunc(g.Config.PingInterval, c.pingTick)
	}
	c.mu.Unlock()
	for range c.wake {
		w := c.take()
		if w.ended {
			if w.close != nil { // answer the app's close frame
				_ = c.writeClose(w.close)
			}
			return
		}
		if w.ping {
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(g.Config.WriteTimeout)); err != nil {
				c.abort()
				return
			}
		}
		if w.pong != nil {
			if err := c.ws.WriteControl(websocket.PongMessage, []byte(*w.pong), time.Now().Add(g.Config.WriteTimeout)); err != nil {
				c.abort()
				return
			}
		}
		for _, f := range w.frames {
			if err := c.write(f); err != nil {
				g.Logger.Debug("driver socket write", slog.String("driver_id", c.driverID), slog.Any("err", err))
				c.abort()
				return
			}
		}
		if w.close != nil {
			if err := c.writeClose(w.close); err == nil {
				c.awaitReader(g.Config.CloseTimeout)
			}
			c.abort()
			return
		}
	}
}

// awaitReader waits up to d for the reader to end (the app answering a close frame).
func (c *conn) awaitReader(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		c.mu.Lock()
		ended := c.ended
		c.mu.Unlock()
		if ended {
			return
		}
		select {
		case <-c.wake:
		case <-t.C:
			return
		}
	}
}

func (c *conn) write(f outFrame) error {
	if err := c.ws.SetWriteDeadline(time.Now().Add(c.g.Config.WriteTimeout)); err != nil {
		return err
	}
	w, err := c.ws.NextWriter(websocket.TextMessage)
	if err != nil {
		return err
	}
	if err := json.NewEncoder(w).Encode(f.v); err != nil {
		return fmt.Errorf("encode %s frame: %w", f.typ, err)
	}
	if err := w.Close(); err != nil {
		return err
	}
	c.g.Metrics.frameOut(f.typ)
	return nil
}

func (c *conn) writeClose(cl *closeReq) error {
	return c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(cl.code, cl.reason),
		time.Now().Add(c.g.Config.WriteTimeout))
}

// readLoop reads frames until the socket ends, then waits for the writer and detaches
// the socket from its session.
func (c *conn) readLoop() {
	defer c.finish()
	g := c.g
	extend := func() { _ = c.ws.SetReadDeadline(time.Now().Add(g.Config.ReadTimeout)) }
	extend()
	// Pings and pongs count towards the frame rate as every other frame does.
	c.ws.SetPongHandler(func(string) error {
		extend()
		if !c.isClosing() {
			c.admit("pong")
		}
		return nil
	})
	c.ws.SetPingHandler(func(data string) error {
		extend()
		if c.isClosing() || !c.admit("ping") {
			return nil
		}
		c.mu.Lock()
		c.pong = &data
		c.mu.Unlock()
		c.signal()
		return nil
	})
	c.ws.SetCloseHandler(func(code int, text string) error {
		c.mu.Lock()
		if c.closing == nil { // the app closed first: echo its code
			echo := code
			if echo == websocket.CloseNoStatusReceived {
				echo = websocket.CloseNormalClosure
			}
			c.closing = &closeReq{code: echo}
		}
		c.mu.Unlock()
		return nil
	})
	for {
		mt, r, err := c.ws.NextReader()
		if err != nil {
			c.readEnded(err)
			return
		}
		extend()
		if c.isClosing() || !c.admit("") {
			continue // skip frames until the app answers the close
		}
		if err := c.readFrame(mt, r); err != nil {
			c.readEnded(err)
			return
		}
	}
}

// admit takes one frame's share of the socket's rate before the frame is read: it
// waits for the read pace, then reports whether the socket is within its budget. A
// socket over it (flooding) is asked to close with 1008. typ names control frames
// for the metrics ("" for a data frame).
func (c *conn) admit(typ string) bool {
	if err := c.pace.Wait(c.g.ctx); err != nil {
		return false // the gateway is dropping every socket
	}
	if c.flood.Allow() {
		return true
	}
	if typ == "" {
		typ = "invalid"
	}
	c.g.Metrics.frameIn("invalid")
	c.policyClose(typ, dispatch.ECodeRateLimited, dispatch.ECodeRateLimited.Info().WSClose, "too many frames",
		slog.Float64("frame_rate", float64(c.g.Config.FrameRate)), slog.Duration("flood_window", c.g.Config.FloodWindow))
	return false
}

// policyClose refuses a frame of type typ, whose error code is code, by closing the
// socket with wsClose (1007, 1008, 1009); it is counted and logged (sampled).
func (c *conn) policyClose(typ string, code dispatch.ECode, wsClose int, reason string, attrs ...slog.Attr) {
	c.g.Metrics.frameRefused(typ, code)
	c.g.logSampled(slog.LevelWarn, "driver socket closed: "+reason, append([]slog.Attr{slog.String("driver_id", c.driverID),
		slog.Int("close", wsClose), slog.String("code", string(code))}, attrs...)...)
	c.closeWith(wsClose, reason)
}

// readFrame reads one message into a pooled buffer (a buffer per socket would cost
// idle sockets MaxFrameBytes each) and handles it. It returns only socket errors.
func (c *conn) readFrame(mt int, r io.Reader) error {
	g := c.g
	bufp := g.bufs.Get().(*[]byte)
	defer g.bufs.Put(bufp)
	buf := (*bufp)[:g.Config.MaxFrameBytes+1]
	n, err := io.ReadFull(r, buf)
	switch {
	case err == nil: // filled the buffer: over the limit
		g.Metrics.frameIn("invalid")
		c.policyClose("invalid", dispatch.ECodeTooLarge, dispatch.ECodeTooLarge.Info().WSClose, fmt.Sprintf("frame over %d bytes", g.Config.MaxFrameBytes),
			slog.Int("max_frame_bytes", g.Config.MaxFrameBytes))
		return nil
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
	default:
		return err
	}
	if mt != websocket.TextMessage {
		g.Metrics.frameIn("invalid")
		g.Metrics.frameRefused("binary", dispatch.ECodeInvalid)
		c.send(outFrame{typ: TypeError, v: NewError(invalid("send JSON text frames, not binary"), "")})
		return nil
	}
	if !utf8.Valid(buf[:n]) {
		g.Metrics.frameIn("invalid")
		c.policyClose("invalid", dispatch.ECodeInvalid, CloseInvalidUTF8, "text frame is not valid UTF-8")
		return nil
	}
	c.handle(buf[:n])
	return nil
}

// readEnded records why the socket ended when no close frame was exchanged.
func (c *conn) readEnded(err error) {
	var ce *websocket.CloseError
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.endCode != 0 {
		return
	}
	switch {
	case c.closing != nil:
		c.endCode = c.closing.code
	case errors.As(err, &ce):
		c.endCode = ce.Code
	default:
		c.endCode = websocket.CloseAbnormalClosure
	}
}

// finish runs once the reader has ended: stop the writer, close the TCP connection,
// detach from the session.
func (c *conn) finish() {
	c.mu.Lock()
	c.ended = true
	if c.pinger != nil {
		c.pinger.Stop()
	}
	c.mu.Unlock()
	c.signal()
	<-c.wdone
	c.abort()
	c.mu.Lock()
	code := c.endCode
	c.queue = nil
	c.mu.Unlock()
	c.g.detach(c)
	c.g.Metrics.closed(code)
	c.g.Metrics.connect(-1)
	c.g.wg.Done()
}

// handle decodes one frame and makes its engine call. Every refusal answers an error
// frame; the socket stays open unless the error table gives the code a close code.
func (c *conn) handle(data []byte) {
	g := c.g
	f, err := DecodeFrame(data)
	if err != nil {
		g.Metrics.frameIn(inLabel(f.Type))
		g.Metrics.frameRefused(inLabel(f.Type), dispatch.ErrorCode(err))
		g.logSampled(slog.LevelInfo, "driver frame refused", slog.String("driver_id", c.driverID),
			slog.String("type", inLabel(f.Type)), slog.String("code", string(dispatch.ErrorCode(err))), slog.Any("err", err))
		c.send(outFrame{typ: TypeError, v: NewError(err, refOf(f))})
		return
	}
	g.Metrics.frameIn(f.Type)
	g.busy(c, true)
	defer g.busy(c, false) // after the answer: then the offers this frame made possible
	ctx, cancel := g.opContext()
	defer cancel()
	id, eng := c.driverID, g.Engine
	switch f.Type {
	case TypeLocation:
		p := f.Point()
		err = eng.UpdateLocation(ctx, id, p)
		to := dispatch.RedirectOf(err)
		if to != nil { // recorded; the driver belongs elsewhere
			err = nil
			if c.elsewhere++; c.elsewhere >= g.Config.BorderLocations {
				g.Metrics.frameRefused(f.Type, dispatch.ECodeWrongRegion)
				c.moveTo(*to, "wrong_region")
				return
			}
		} else {
			c.elsewhere = 0
		}
		if err == nil {
			g.setLocation(c.sess, p)
			if f.Ref != "" {
				c.ack(f)
			}
		}
	case TypeAvailable:
		if _, err = eng.SetAvailable(ctx, id); err == nil {
			c.ack(f)
		}
	case TypeOffline:
		if _, err = eng.SetOffline(ctx, id); err == nil {
			g.answered(c.sess, "")
			c.ack(f)
		}
	case TypeAccept:
		// Success is told by the assigned frame the engine's event brings (queued
		// before Accept returns); a lost race by offer_revoked plus this error frame.
		_, err = eng.Accept(ctx, id, f.OfferID)
	case TypeDecline:
		if err = eng.Decline(ctx, id, f.OfferID); err == nil {
			g.answered(c.sess, f.OfferID)
			c.ack(f)
		}
	case TypeArrived, TypeStart, TypeComplete:
		step := eng.Arrived
		switch f.Type {
		case TypeStart:
			step = eng.Start
		case TypeComplete:
			step = eng.Complete
		}
		var r dispatch.Ride
		if r, err = step(ctx, id, f.RideID); err == nil {
			g.answerRide(c, r, f.RefOr())
		}
	}
	if err != nil {
		g.Metrics.frameRefused(f.Type, dispatch.ErrorCode(err))
		g.logErr("driver frame refused", id, err, slog.String("type", f.Type), slog.String("ref", f.RefOr()))
		c.send(outFrame{typ: TypeError, v: NewError(err, f.RefOr())})
		if to := dispatch.RedirectOf(err); to != nil {
			// The driver's ride is in an area another region serves now.
			c.moveTo(*to, "wrong_region")
			return
		}
		if code := dispatch.ErrorCode(err).Info().WSClose; code != 0 {
			c.closeWith(code, dispatch.ErrorMessage(err))
		}
	}
}

// moveTo sends the reconnect frame to region to and closes the socket with
// CloseReconnect: the app resumes there.
func (c *conn) moveTo(to dispatch.Redirect, reason string) {
	c.send(outFrame{typ: TypeReconnect, v: Reconnect{Type: TypeReconnect, Region: to.Region, URL: to.URL, Reason: reason}})
	c.closeWith(CloseReconnect, "served by region "+to.Region)
}

func (c *conn) ack(f Frame) { c.send(outFrame{typ: TypeAck, v: Ack{Type: TypeAck, Ref: f.RefOr()}}) }

// refOf is the ref of a frame that failed to decode: whatever of it was readable.
func refOf(f Frame) string {
	if f.Ref == "" && f.Type == "" {
		return ""
	}
	return f.RefOr()
}

// inLabel bounds the frames_in metric's type label to the known types.
func inLabel(typ string) string {
	switch typ {
	case TypeLocation, TypeAvailable, TypeOffline, TypeAccept, TypeDecline, TypeArrived, TypeStart, TypeComplete:
		return typ
	}
	return "invalid"
}
