// Package client is a Go client for the driver socket (GET /v1/driver/ws): it dials
// with a driver token, sends the driver's frames, delivers the server's frames on a
// channel, and, when asked to, reconnects after a drop with exponential backoff and
// full jitter. The server's welcome frame, first on every connection, tells the caller
// where the driver stands, so resuming needs nothing else. A reconnect frame (close
// 4002: another region serves the driver's area) is followed on its own: the client
// dials that region with the same token and resumes there. When the region it talks
// to cannot be reached at all, a reconnecting client dials another region of the
// deployment (learned from GET /v1/regions), where the driver is welcomed or sent on
// to the region that serves it. Tests and the load simulator use it.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/driver"
)

// Errors of Client's methods.
var (
	// ErrNotConnected: the client is between connections (reconnecting); try again
	// after the next welcome frame.
	ErrNotConnected = errors.New("driver client: not connected")
	// ErrClosed: Close was called.
	ErrClosed = errors.New("driver client: closed")
)

// MaxMoves is how many reconnect frames in a row (each on a connection shorter than
// Dialer.MaxBackoff) the client follows; the next one, or one that sends it back to a
// region it has just left, stops it with a *MoveError, so two regions that disagree
// cannot bounce it between them forever.
const MaxMoves = 3

// MoveError: the client stopped rather than follow another region move.
type MoveError struct {
	Region, URL string // where the last reconnect frame said to go
	Moves       int    // moves followed in a row before it
}

func (e *MoveError) Error() string {
	return fmt.Sprintf("driver client: not following reconnect to region %s (%s) after %d moves in a row", e.Region, e.URL, e.Moves)
}

// HandshakeError is a handshake the server refused with an HTTP status and a problem.
type HandshakeError struct {
	Status int            // HTTP status, e.g. 401
	Code   dispatch.ECode // the problem's code, e.g. unauthorized
	Detail string
}

func (e *HandshakeError) Error() string {
	return fmt.Sprintf("driver socket refused: %d %s: %s", e.Status, e.Code, e.Detail)
}

// Dialer holds the options of a connection. The zero value dials once, with the token
// in the Authorization header, and does not reconnect.
type Dialer struct {
	// Reconnect redials after a drop (not after Close, a refused token, or close 4000
	// "replaced by a newer connection"). A region move (a reconnect frame, then close
	// 4002) is followed either way; Reconnect also retries a failed dial there. After
	// FailoverAfter dials in a row that do not reach the region at all (refused,
	// reset, timed out; not a refused handshake), it dials another region of the
	// deployment instead, those GET /v1/regions last said are up first, with the same
	// token, and goes round them all with backoff while none answers.
	Reconnect bool
	// Regions are URLs of the deployment's regions (http://host as in the deployment
	// file, or their driver socket URLs): asked for GET /v1/regions, and dialled in
	// turn when the URL given to Dial cannot be reached, so a driver can start while
	// that region is down. Without them the client learns the regions from the first
	// region it connects to.
	Regions []string
	// MinBackoff and MaxBackoff bound the wait before each redial: attempt n waits a
	// random time in [0, min(MaxBackoff, MinBackoff*2^n)] (full jitter). Defaults
	// 250 ms and 30 s.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// Subprotocol sends the token as the subprotocol "bearer.<jwt>", as a browser must,
	// instead of the Authorization header.
	Subprotocol bool
	// Header is added to the handshake, e.g. Origin.
	Header http.Header
	// Buffer is the capacity of the Frames channel; default 64. A caller that stops
	// reading Frames stalls the connection, and the server eventually drops it.
	Buffer int
	// HandshakeTimeout bounds each dial; default 10 s.
	HandshakeTimeout time.Duration
	// OnDisconnect, if set, is called (on the client's goroutine) each time a
	// connection ends, with why: a *websocket.CloseError carries the close code.
	OnDisconnect func(err error)
}

// Dial connects to url (ws://host/v1/driver/ws) as the driver of token with the zero
// Dialer.
func Dial(ctx context.Context, url, token string) (*Client, error) {
	var d Dialer
	return d.Dial(ctx, url, token)
}

// Client is one driver's connection, kept open across drops when the Dialer says so.
// Its methods are safe for concurrent use.
type Client struct {
	d      Dialer
	first  string // the URL given to Dial
	token  string
	frames chan driver.Message
	ctx    context.Context // ended by Close
	cancel context.CancelFunc
	done   chan struct{} // closed when the client's goroutine has ended

	connMu sync.Mutex
	url    string // the socket URL dialled now
	cur    *websocket.Conn
	err    error               // why the client stopped
	move   *driver.Reconnect   // the current connection's reconnect frame, if any
	view   []region            // the deployment's regions, from the last GET /v1/regions
	areas  []dispatch.AreaView // the deployment's areas, from the last GET /v1/regions
	known  bool                // some region has answered GET /v1/regions

	writeMu sync.Mutex // one writer at a time
}

// Dial connects and returns once the handshake succeeded. A refused handshake is a
// *HandshakeError. When url cannot be reached, the regions of Dialer.Regions are
// dialled in turn, each once, within ctx.
func (d Dialer) Dial(ctx context.Context, url, token string) (*Client, error) {
	if d.MinBackoff <= 0 {
		d.MinBackoff = 250 * time.Millisecond
	}
	if d.MaxBackoff <= 0 {
		d.MaxBackoff = 30 * time.Second
	}
	if d.MaxBackoff < d.MinBackoff {
		d.MaxBackoff = d.MinBackoff
	}
	if d.Buffer <= 0 {
		d.Buffer = 64
	}
	if d.HandshakeTimeout <= 0 {
		d.HandshakeTimeout = 10 * time.Second
	}
	c := &Client{d: d, first: url, url: url, token: token, frames: make(chan driver.Message, d.Buffer), done: make(chan struct{})}
	ws, err := c.dial(ctx)
	if unreached(err) && len(d.Regions) > 0 {
		ws, err = c.dialElsewhere(ctx, err)
	}
	if err != nil {
		return nil, err
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.cur = ws
	go c.run(ws)
	return c, nil
}

// URL is the socket URL the client dials now: the one given to Dial, or the region a
// reconnect frame sent it to.
func (c *Client) URL() string {
	c.connMu.Lock()
	defer c.connMu.Unlock()
	return c.url
}

func (c *Client) dial(ctx context.Context) (*websocket.Conn, error) {
	ws := websocket.Dialer{HandshakeTimeout: c.d.HandshakeTimeout, Proxy: http.ProxyFromEnvironment}
	h := http.Header{}
	for k, v := range c.d.Header {
		h[k] = v
	}
	if c.d.Subprotocol {
		ws.Subprotocols = []string{"bearer." + c.token}
	} else {
		h.Set("Authorization", "Bearer "+c.token)
	}
	conn, resp, err := ws.DialContext(ctx, c.URL(), h)
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			defer resp.Body.Close()
			he := &HandshakeError{Status: resp.StatusCode}
			var p struct {
				Code   dispatch.ECode `json:"code"`
				Detail string         `json:"detail"`
			}
			if b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096)); json.Unmarshal(b, &p) == nil {
				he.Code, he.Detail = p.Code, p.Detail
			}
			return nil, he
		}
		return nil, fmt.Errorf("dial driver socket: %w", err)
	}
	return conn, nil
}

// Frames delivers the server's frames in order, a welcome first after every
// (re)connect. It is closed when the client stops; Err then says why.
func (c *Client) Frames() <-chan driver.Message { return c.frames }

// Err is why the client stopped (nil while it runs): a *websocket.CloseError with the
// server's close code, a *HandshakeError, or ErrClosed.
func (c *Client) Err() error {
	c.connMu.Lock()
	defer c.connMu.Unlock()
	return c.err
}

// Subprotocol is the subprotocol the server chose for the current connection.
func (c *Client) Subprotocol() string {
	if ws := c.conn(); ws != nil {
		return ws.Subprotocol()
	}
	return ""
}

func (c *Client) conn() *websocket.Conn {
	c.connMu.Lock()
	defer c.connMu.Unlock()
	return c.cur
}

// run reads the current connection until it ends, then redials if asked to.
func (c *Client) run(ws *websocket.Conn) {
	defer close(c.done)
	defer close(c.frames)
	attempt := 0
	var left []string // the URLs of the moves in a row so far
	for {
		began := time.Now()
		if !c.learned() {
			// Before reading: a caller that has the welcome knows the client can
			// fail over. Bounded by HandshakeTimeout.
			c.learn(c.ctx, map[string]bool{})
		}
		err := c.read(ws)
		c.connMu.Lock()
		c.cur = nil
		move := c.move
		c.move = nil
		c.connMu.Unlock()
		_ = ws.NetConn().Close()
		if c.d.OnDisconnect != nil {
			c.d.OnDisconnect(err)
		}
		if c.ctx.Err() != nil {
			err = ErrClosed
		}
		if time.Since(began) > c.d.MaxBackoff {
			attempt = 0 // it held for a while: start the backoff over
			left = nil
		}
		moved := false
		if move != nil && websocket.IsCloseError(err, driver.CloseReconnect) {
			to, ok := socketURL(move.URL)
			for _, u := range left {
				ok = ok && u != to
			}
			if !ok || len(left) >= MaxMoves {
				c.stop(&MoveError{Region: move.Region, URL: move.URL, Moves: len(left)})
				return
			}
			c.connMu.Lock()
			left = append(left, c.url)
			c.url = to
			c.connMu.Unlock()
			moved, attempt = true, 0
		}
		if !moved && (errors.Is(err, ErrClosed) || !c.d.Reconnect || !retryable(err)) {
			c.stop(err)
			return
		}
		now := moved              // a move dials the new region at once
		unanswered := 0           // dials in a row that did not reach the current region
		dead := map[string]bool{} // regions that did not answer in this outage
		for {
			if !now {
				t := time.NewTimer(c.d.Backoff(attempt))
				select {
				case <-c.ctx.Done():
					t.Stop()
					c.stop(ErrClosed)
					return
				case <-t.C:
				}
			}
			now = false
			attempt++
			ws, err = c.dial(c.ctx)
			if err == nil {
				break
			}
			if c.ctx.Err() != nil {
				c.stop(ErrClosed)
				return
			}
			if !retryable(err) || !c.d.Reconnect {
				c.stop(err)
				return
			}
			if !unreached(err) {
				unanswered = 0
				continue
			}
			if unanswered++; unanswered >= FailoverAfter {
				unanswered = 0
				now = c.failover(dead)
			}
		}
		c.connMu.Lock()
		c.cur = ws
		c.connMu.Unlock()
	}
}

func (c *Client) stop(err error) {
	c.connMu.Lock()
	c.err = err
	c.connMu.Unlock()
}

// read delivers ws's frames to Frames until ws ends.
func (c *Client) read(ws *websocket.Conn) error {
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			return err
		}
		m, err := driver.DecodeMessage(data)
		if err != nil {
			continue // not a frame of this protocol: skip it
		}
		if m.Type == driver.TypeReconnect {
			var rc driver.Reconnect
			if json.Unmarshal(m.Raw, &rc) == nil && rc.URL != "" {
				c.connMu.Lock()
				c.move = &rc
				c.connMu.Unlock()
			}
		}
		select {
		case c.frames <- m:
		case <-c.ctx.Done():
			return ErrClosed
		}
	}
}

// socketURL turns a region's URL (http://host, from a reconnect frame) into its
// driver socket URL (ws://host/v1/driver/ws).
func socketURL(s string) (string, bool) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return "", false
	}
	switch u.Scheme {
	case "http", "ws":
		u.Scheme = "ws"
	case "https", "wss":
		u.Scheme = "wss"
	default:
		return "", false
	}
	if p := strings.TrimRight(u.Path, "/"); p == "" {
		u.Path = driver.Path
	}
	return u.String(), true
}

// retryable reports whether redialing after err can help.
func retryable(err error) bool {
	var he *HandshakeError
	if errors.As(err, &he) {
		return he.Status >= 500 || he.Status == http.StatusTooManyRequests
	}
	return !websocket.IsCloseError(err, driver.CloseReplaced)
}

// Backoff is the wait before redial attempt n (0-based): uniformly random in
// [0, min(MaxBackoff, MinBackoff*2^n)].
func (d Dialer) Backoff(n int) time.Duration {
	ceiling := d.MaxBackoff
	if n < 32 {
		if b := d.MinBackoff << n; b > 0 && b < ceiling {
			ceiling = b
		}
	}
	if ceiling <= 0 {
		return 0
	}
	return rand.N(ceiling + 1)
}

// Close ends the connection with a close frame (1000) and stops reconnecting. It
// waits for the client's goroutine to end.
func (c *Client) Close() error {
	c.cancel()
	if ws := c.conn(); ws != nil {
		c.writeMu.Lock()
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""),
			time.Now().Add(time.Second))
		c.writeMu.Unlock()
		t := time.NewTimer(2 * time.Second)
		select {
		case <-c.done:
		case <-t.C:
			_ = ws.NetConn().Close()
		}
		t.Stop()
	}
	<-c.done
	return nil
}

// Drop ends the current connection abruptly, with no close frame, as a lost network
// would. With Reconnect the client redials.
func (c *Client) Drop() {
	if ws := c.conn(); ws != nil {
		_ = ws.NetConn().Close()
	}
}

// SendRaw writes one frame as is: messageType is websocket.TextMessage or
// websocket.BinaryMessage. Tests use it for malformed frames.
func (c *Client) SendRaw(ctx context.Context, messageType int, data []byte) error {
	if c.ctx.Err() != nil {
		return ErrClosed
	}
	ws := c.conn()
	if ws == nil {
		return ErrNotConnected
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(10 * time.Second)
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if err := ws.SetWriteDeadline(deadline); err != nil {
		return fmt.Errorf("driver client: %w", err)
	}
	if err := ws.WriteMessage(messageType, data); err != nil {
		return fmt.Errorf("driver client: send: %w", err)
	}
	return nil
}

// Send writes f.
func (c *Client) Send(ctx context.Context, f driver.Frame) error {
	b, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("driver client: encode %s: %w", f.Type, err)
	}
	return c.SendRaw(ctx, websocket.TextMessage, b)
}

// Location reports the driver's position.
func (c *Client) Location(ctx context.Context, p dispatch.Point) error {
	return c.Send(ctx, driver.Frame{Type: driver.TypeLocation, Lat: &p.Lat, Lng: &p.Lng})
}

// Available makes the driver ready for offers (after a location).
func (c *Client) Available(ctx context.Context) error {
	return c.Send(ctx, driver.Frame{Type: driver.TypeAvailable})
}

// Offline stops offers.
func (c *Client) Offline(ctx context.Context) error {
	return c.Send(ctx, driver.Frame{Type: driver.TypeOffline})
}

// Accept answers an offer with yes: assigned or offer_revoked follows.
func (c *Client) Accept(ctx context.Context, offerID string) error {
	return c.Send(ctx, driver.Frame{Type: driver.TypeAccept, OfferID: offerID})
}

// Decline answers an offer with no.
func (c *Client) Decline(ctx context.Context, offerID string) error {
	return c.Send(ctx, driver.Frame{Type: driver.TypeDecline, OfferID: offerID})
}

// Arrived: the driver is at the pickup.
func (c *Client) Arrived(ctx context.Context, rideID string) error {
	return c.Send(ctx, driver.Frame{Type: driver.TypeArrived, RideID: rideID})
}

// Start: the rider is on board.
func (c *Client) Start(ctx context.Context, rideID string) error {
	return c.Send(ctx, driver.Frame{Type: driver.TypeStart, RideID: rideID})
}

// Complete: the trip is over.
func (c *Client) Complete(ctx context.Context, rideID string) error {
	return c.Send(ctx, driver.Frame{Type: driver.TypeComplete, RideID: rideID})
}
