// Package client is a Go client of the rider HTTP API (rider/), for tests, the load
// simulator and partner backends written in Go. Ride requests carry an idempotency
// key, so they are retried safely after 429, 503 and network errors. In a deployment
// of several regions it follows 421 wrong_region to the region named, and fails over
// on its own to another region (learned from GET /v1/regions) when the one it talks
// to cannot be reached.
package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/understudy/understudy/dispatch/problem"
	"github.com/understudy/understudy/rider"
)

// Client calls an Understudy deployment's rider API as one rider (or admin), through
// the region at BaseURL first. Create it with New; the fields may be changed before
// first use.
//
// Failover: the client's first call asks GET /v1/regions for the deployment's
// regions (a 404, or a lone region, leaves it talking to BaseURL alone, as with one
// region). When a region cannot be reached (refused, reset, timed out: no HTTP
// answer), the call goes on at once to another region it knows and has not tried in
// this call, those last seen up first, with the same body and Idempotency-Key; 421
// wrong_region is followed from there as usual. A call about a ride (Ride, Cancel,
// Follow) that has left the ride's region passes over regions that answer 404, and
// the region that has the ride becomes the ride's region (RideURL). Each region is
// tried at most once per call; once none is left, a network error is retried at the
// last one as with one region, and ctx bounds it all.
//
// While an area changes hands (an admin's move, a takeover) the regions disagree for
// a moment: the one a 421 named answers 503 no_lease for a ride it has not adopted
// yet (404 in the instant before it knows it holds the area), or names the region
// that sent the call there. Such a call pauses (the backoff, at most
// a second) and starts over, Retries times and for HandOver at least; so does an
// event stream, which also waits out the Retry-After of each 503 no_lease as long.
type Client struct {
	BaseURL string       // e.g. http://127.0.0.1:8080
	Token   string       // bearer JWT, role rider or admin
	HTTP    *http.Client // nil means http.DefaultClient
	// Regions are base URLs of the deployment's regions (e.g. from its deployment
	// file), asked for GET /v1/regions and tried in turn when BaseURL cannot be
	// reached, so a client can start while BaseURL's region is down. Optional.
	Regions []string
	// Retries is how many times a request is repeated after 429, 503, a 409 that
	// says when to retry, or a network error. 0 means none.
	Retries int
	// Backoff is the first pause between retries, doubled up to MaxBackoff, with
	// jitter. A Retry-After header sets the pause instead.
	Backoff, MaxBackoff time.Duration
	// HandOver is how long a call (with Retries above 0) or an event stream waits
	// at least while a ride's area changes hands (and Retries tries at least) before
	// it gives up with the last answer. 0 means 30 s: a takeover on a busy machine
	// takes some seconds.
	HandOver time.Duration

	mu      sync.Mutex
	regions map[string]string // ride id -> base URL of the region that has it, when not BaseURL
	view    []region          // the deployment's regions, from the last GET /v1/regions
	known   bool              // some region has answered GET /v1/regions
}

// MaxHops is how many 421 wrong_region answers one call follows to the region they
// name before it gives up with the last one.
const MaxHops = 3

// Errors an *Error matches with errors.Is.
var (
	// ErrOutsideServiceArea: the pickup is in no area of the deployment (421
	// outside_service_area). No region serves it.
	ErrOutsideServiceArea = errors.New("rider API: pickup outside the service area")
	// ErrWrongRegion: another region serves the pickup (421 wrong_region) and the
	// client did not get there within MaxHops, or regions kept naming each other
	// after Retries pauses.
	ErrWrongRegion = errors.New("rider API: served by another region")
)

// New returns a client of the API at baseURL that authenticates with token and
// retries 4 times, starting at 100 ms.
func New(baseURL, token string) *Client {
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), Token: token, Retries: 4,
		Backoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second}
}

// Error is an answer the API refused: its status and problem details.
type Error struct {
	StatusCode int
	problem.Details
	// RetryAfter is the Retry-After header's wait, 0 when absent.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	return fmt.Sprintf("rider API: %d %s: %s", e.StatusCode, e.Code, e.Detail)
}

// Is makes errors.Is(err, ErrOutsideServiceArea) and errors.Is(err, ErrWrongRegion)
// true for those 421 answers.
func (e *Error) Is(target error) bool {
	return (target == ErrOutsideServiceArea && e.Code == "outside_service_area") ||
		(target == ErrWrongRegion && e.Code == "wrong_region")
}

// Code returns the problem code of err if it is an *Error, else "".
func Code(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// RequestRide requests a ride. key is the Idempotency-Key; "" makes a random one, so
// the client's own retries never create a second ride. A pickup another region serves
// (421 wrong_region) is requested again there, with the same key and body, and the
// client keeps that region's URL for the ride's later calls (Ride, Cancel, Follow);
// so is a request that fails over from a region it cannot reach.
// A pickup in no area is an error matching ErrOutsideServiceArea.
func (c *Client) RequestRide(ctx context.Context, req rider.RideRequest, key string) (rider.Ride, error) {
	if key == "" {
		key = NewKey()
	}
	var out rider.Ride
	base, err := c.do(ctx, "", http.MethodPost, "/v1/rides", req, http.Header{rider.IdempotencyKeyHeader: {key}}, http.StatusCreated, &out)
	if err == nil && out.ID != "" {
		c.setRideURL(out.ID, base)
	}
	return out, err
}

// RideURL is the base URL the client calls for ride id: the region that answered for
// it last when that is not BaseURL (a 421 or a failover sent the client there), else
// BaseURL.
func (c *Client) RideURL(id string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if u, ok := c.regions[id]; ok {
		return u
	}
	return c.BaseURL
}

// setRideURL makes base the region the client calls for ride id.
func (c *Client) setRideURL(id, base string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case base == c.BaseURL:
		delete(c.regions, id)
	case c.regions == nil:
		c.regions = map[string]string{id: base}
	default:
		c.regions[id] = base
	}
}

// Ride returns the ride with id.
func (c *Client) Ride(ctx context.Context, id string) (rider.Ride, error) {
	var out rider.Ride
	_, err := c.do(ctx, id, http.MethodGet, "/v1/rides/"+url.PathEscape(id), nil, nil, http.StatusOK, &out)
	return out, err
}

// Cancel cancels the ride with id and returns it.
func (c *Client) Cancel(ctx context.Context, id string) (rider.Ride, error) {
	var out rider.Ride
	_, err := c.do(ctx, id, http.MethodPost, "/v1/rides/"+url.PathEscape(id)+"/cancel", nil, nil, http.StatusOK, &out)
	return out, err
}

// Estimate quotes a ride without creating it, asking the region that serves the
// pickup (421 wrong_region is followed, as for RequestRide).
func (c *Client) Estimate(ctx context.Context, req rider.RideRequest) (rider.Estimate, error) {
	var out rider.Estimate
	_, err := c.do(ctx, "", http.MethodPost, "/v1/estimates", req, nil, http.StatusOK, &out)
	return out, err
}

// NewKey returns a random idempotency key.
func NewKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

// query is one API call, as exchange sends it to one region after another.
type query struct {
	ride         string // the ride the call is about; "" for a request or an estimate
	method, path string
	payload      []byte
	hdr          http.Header
	want         func(status int) bool
	// decode reads a wanted answer; an error it returns counts as the region's
	// answer (a cut-off body is a network error). nil: exchange returns the answer
	// unread, for the caller to read and close.
	decode  func(*http.Response) error
	retries int // repeats at one region, as Client.Retries
}

// do sends one API call about ride (or none), and decodes a want answer into out.
// It returns the base URL that answered.
func (c *Client) do(ctx context.Context, ride, method, path string, body any, hdr http.Header, want int, out any) (string, error) {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return c.BaseURL, fmt.Errorf("encode %s %s: %w", method, path, err)
		}
	}
	_, base, err := c.exchange(ctx, query{ride: ride, method: method, path: path, payload: payload, hdr: hdr,
		want: func(status int) bool { return status == want }, decode: func(resp *http.Response) error { return decode(resp, out) },
		retries: c.Retries})
	return base, err
}

// exchange sends q to the ride's region (or BaseURL), retrying what may be retried,
// following up to MaxHops 421 wrong_region answers and failing over to the other
// regions when one cannot be reached (see Client). It returns the answer when
// q.decode is nil, and the base URL that answered.
func (c *Client) exchange(ctx context.Context, q query) (*http.Response, string, error) {
	f := newFailover()
	if !c.viewKnown() {
		c.learn(ctx, f)
	}
	start := c.BaseURL
	if q.ride != "" {
		start = c.RideURL(q.ride)
	}
	var (
		base     string
		hops     int
		hopped   bool      // base is the region a 421 named
		transits int       // times the call started over after an area changing hands
		handing  time.Time // when it first did
	)
	begin := func() {
		base, hops, hopped = start, 0, false
		f.tried[base] = true
		if f.dead[base] != nil { // found down just now
			if next, ok := c.next(f, base); ok {
				base = next
				f.tried[base] = true
			}
		}
	}
	begin()
	for attempt := 0; ; attempt++ {
		resp, err := c.send(ctx, base, q.method, q.path, q.payload, q.hdr)
		if err == nil {
			switch {
			case !q.want(resp.StatusCode):
				err = responseError(resp)
				resp.Body.Close()
			case q.decode == nil:
				c.settle(q.ride, base)
				return resp, base, nil
			default:
				err = q.decode(resp)
				resp.Body.Close()
			}
		}
		if err == nil {
			c.settle(q.ride, base)
			return nil, base, nil
		}
		if ctx.Err() != nil {
			return nil, base, err
		}
		if next, ok := wrongRegion(err); ok {
			if !f.asked && c.lone() { // more regions than the client knew of
				c.learn(ctx, f)
			}
			if f.dead[next] != nil {
				// The region that serves the pickup is the one this call could not
				// reach: that is the trouble, and it may pass.
				return nil, next, f.dead[next]
			}
			switch {
			case f.tried[next]:
				// Two regions name each other: an area changing hands, which each
				// sees at its own moment.
				err = &transitError{err: err, why: "regions disagree on who serves the area: it is changing hands"}
			case hops >= MaxHops:
				return nil, base, err
			default:
				hops++
				base, attempt, hopped = next, -1, true // a new region: its own retries
				f.tried[base] = true
				continue
			}
		} else if hopped && q.ride != "" && (notFound(err) || noLease(err)) {
			// Sent by a 421 to a region that has no such ride yet (404, or 503
			// no_lease while it takes the area over): the area was just handed to it,
			// and it is adopting the area's rides.
			err = &transitError{err: err, why: "the region serving the ride's area has not taken the ride yet"}
		}
		if inTransit(err) {
			if transits == 0 {
				handing = time.Now()
			}
			if q.retries == 0 || transits >= q.retries && time.Since(handing) >= c.handOver() {
				return nil, base, err
			}
			if err := sleep(ctx, c.transitPause(transits)); err != nil {
				return nil, base, err
			}
			// Start over: by now the regions may agree.
			transits++
			clear(f.tried)
			begin()
			attempt = -1
			continue
		}
		network := networkError(err)
		if network || (q.ride != "" && f.dead[start] != nil && notFound(err)) {
			if network {
				f.dead[base] = err
			}
			if !f.asked {
				c.learn(ctx, f)
			}
			if next, ok := c.next(f, base); ok {
				base, attempt, hopped = next, -1, false
				f.tried[base] = true
				continue
			}
			if !network {
				// No region left that could have the ride: what is wrong is that its
				// own region cannot be reached, not that the ride is unknown.
				return nil, start, f.dead[start]
			}
		}
		if attempt >= q.retries {
			return nil, base, err
		}
		wait, retry := c.retryable(err, attempt)
		if !retry {
			return nil, base, err
		}
		if err := sleep(ctx, wait); err != nil {
			return nil, base, err
		}
	}
}

// settle records that base answered for ride.
func (c *Client) settle(ride, base string) {
	if ride != "" && base != c.RideURL(ride) {
		c.setRideURL(ride, base)
	}
}

// wrongRegion returns the region a 421 wrong_region err names.
func wrongRegion(err error) (string, bool) {
	var e *Error
	if !errors.As(err, &e) || e.StatusCode != http.StatusMisdirectedRequest || e.Code != "wrong_region" || e.URL == "" {
		return "", false
	}
	return strings.TrimRight(e.URL, "/"), true
}

func (c *Client) send(ctx context.Context, base, method, path string, payload []byte, hdr http.Header) (*http.Response, error) {
	var body io.Reader
	if payload != nil {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	return resp, nil
}

// decode decodes a wanted answer into out (nil: the body is not needed).
func decode(resp *http.Response, out any) error {
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out); err != nil {
		return fmt.Errorf("decode %d answer: %w", resp.StatusCode, err)
	}
	return nil
}

func responseError(resp *http.Response) error {
	e := &Error{StatusCode: resp.StatusCode}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(b, &e.Details) != nil || e.Code == "" {
		e.Detail = strings.TrimSpace(string(b))
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	return e
}

// transitError is an answer seen while a ride's area changes hands (an admin's move,
// a takeover): a 404 from the region a 421 named, which has not adopted the area's
// rides yet, or two regions naming each other. It passes within moments: the call is
// asked again, from the start, after a pause. It unwraps to the answer.
type transitError struct {
	err error
	why string
}

func (e *transitError) Error() string { return e.err.Error() + " (" + e.why + ")" }
func (e *transitError) Unwrap() error { return e.err }

// inTransit reports whether err was seen while an area changed hands.
func inTransit(err error) bool {
	var te *transitError
	return errors.As(err, &te)
}

// retryable says whether err after attempt may be retried, and after what pause.
func (c *Client) retryable(err error, attempt int) (time.Duration, bool) {
	if attempt >= c.Retries {
		return 0, false
	}
	return c.retryWait(err, attempt)
}

// retryWait says whether err may pass if asked again, and after what pause (its
// Retry-After, else the backoff of attempt), however many times it was asked.
func (c *Client) retryWait(err error, attempt int) (time.Duration, bool) {
	if inTransit(err) {
		return c.backoff(attempt), true
	}
	var e *Error
	if errors.As(err, &e) {
		ok := e.StatusCode == http.StatusTooManyRequests || e.StatusCode == http.StatusServiceUnavailable ||
			(e.StatusCode == http.StatusConflict && e.RetryAfter > 0)
		if !ok {
			return 0, false
		}
		if e.RetryAfter > 0 {
			return e.RetryAfter, true
		}
		return c.backoff(attempt), true
	}
	if networkError(err) {
		return c.backoff(attempt), true
	}
	return 0, false
}

// handOver is HandOver, or its default.
func (c *Client) handOver() time.Duration {
	if c.HandOver > 0 {
		return c.HandOver
	}
	return 30 * time.Second
}

// transitPause is the pause before asking again, the transit-th time, while an area
// changes hands: the backoff, at most a second, since the hand-over ends any moment.
func (c *Client) transitPause(transit int) time.Duration {
	return min(c.backoff(transit), time.Second)
}

// handingOver reports whether err is an answer seen while an area changes hands: a
// transit, or a 503 no_lease.
func handingOver(err error) bool { return inTransit(err) || noLease(err) }

// noLease reports whether err is a 503 no_lease: nobody serves the area at this
// moment, or the region is taking it over and has not adopted the ride yet.
func noLease(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.StatusCode == http.StatusServiceUnavailable && e.Code == "no_lease"
}

// backoff is the pause before retry attempt+1: exponential with full jitter.
func (c *Client) backoff(attempt int) time.Duration {
	base, ceiling := c.Backoff, c.MaxBackoff
	if base <= 0 {
		base = 100 * time.Millisecond
	}
	if ceiling < base {
		ceiling = base
	}
	d := base << min(attempt, 20)
	if d <= 0 || d > ceiling {
		d = ceiling
	}
	return d/2 + mrand.N(d/2+1)
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
