// Package client is a Go client of the rider HTTP API (rider/), for tests, the load
// simulator and partner backends written in Go. Ride requests carry an idempotency
// key, so they are retried safely after 429, 503 and network errors.
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

// Client calls one Understudy region's rider API as one rider (or admin). Create it
// with New; the fields may be changed before first use.
type Client struct {
	BaseURL string       // e.g. http://127.0.0.1:8080
	Token   string       // bearer JWT, role rider or admin
	HTTP    *http.Client // nil means http.DefaultClient
	// Retries is how many times a request is repeated after 429, 503, a 409 that
	// says when to retry, or a network error. 0 means none.
	Retries int
	// Backoff is the first pause between retries, doubled up to MaxBackoff, with
	// jitter. A Retry-After header sets the pause instead.
	Backoff, MaxBackoff time.Duration

	mu      sync.Mutex
	regions map[string]string // ride id -> base URL of the region that created it, when not BaseURL
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
	// client did not get there within MaxHops.
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
// client keeps that region's URL for the ride's later calls (Ride, Cancel, Follow).
// A pickup in no area is an error matching ErrOutsideServiceArea.
func (c *Client) RequestRide(ctx context.Context, req rider.RideRequest, key string) (rider.Ride, error) {
	if key == "" {
		key = NewKey()
	}
	var out rider.Ride
	base, err := c.do(ctx, c.BaseURL, http.MethodPost, "/v1/rides", req, http.Header{rider.IdempotencyKeyHeader: {key}}, http.StatusCreated, &out)
	if err == nil && base != c.BaseURL && out.ID != "" {
		c.mu.Lock()
		if c.regions == nil {
			c.regions = make(map[string]string)
		}
		c.regions[out.ID] = base
		c.mu.Unlock()
	}
	return out, err
}

// RideURL is the base URL the client calls for ride id: the region that created it
// when RequestRide was sent on to another region, else BaseURL.
func (c *Client) RideURL(id string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if u, ok := c.regions[id]; ok {
		return u
	}
	return c.BaseURL
}

// Ride returns the ride with id.
func (c *Client) Ride(ctx context.Context, id string) (rider.Ride, error) {
	var out rider.Ride
	_, err := c.do(ctx, c.RideURL(id), http.MethodGet, "/v1/rides/"+url.PathEscape(id), nil, nil, http.StatusOK, &out)
	return out, err
}

// Cancel cancels the ride with id and returns it.
func (c *Client) Cancel(ctx context.Context, id string) (rider.Ride, error) {
	var out rider.Ride
	_, err := c.do(ctx, c.RideURL(id), http.MethodPost, "/v1/rides/"+url.PathEscape(id)+"/cancel", nil, nil, http.StatusOK, &out)
	return out, err
}

// Estimate quotes a ride without creating it, asking the region that serves the
// pickup (421 wrong_region is followed, as for RequestRide).
func (c *Client) Estimate(ctx context.Context, req rider.RideRequest) (rider.Estimate, error) {
	var out rider.Estimate
	_, err := c.do(ctx, c.BaseURL, http.MethodPost, "/v1/estimates", req, nil, http.StatusOK, &out)
	return out, err
}

// NewKey returns a random idempotency key.
func NewKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

// do sends one API call to the region at base, retrying what may be retried and
// following up to MaxHops 421 wrong_region answers to the region they name, and
// decodes a want answer into out. It returns the base URL that answered.
func (c *Client) do(ctx context.Context, base, method, path string, body any, hdr http.Header, want int, out any) (string, error) {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return base, fmt.Errorf("encode %s %s: %w", method, path, err)
		}
	}
	visited := []string{base}
	for attempt := 0; ; attempt++ {
		resp, err := c.send(ctx, base, method, path, payload, hdr)
		if err == nil {
			err = c.read(resp, want, out)
		}
		if err == nil {
			return base, nil
		}
		if next, ok := redirect(err, visited); ok {
			base, visited, attempt = next, append(visited, next), -1 // a new region: its own retries
			continue
		}
		wait, retry := c.retryable(err, attempt)
		if !retry || ctx.Err() != nil {
			return base, err
		}
		if err := sleep(ctx, wait); err != nil {
			return base, err
		}
	}
}

// redirect returns the region a 421 wrong_region err names, unless the call has
// already made MaxHops hops or been there (two regions sending it back and forth).
func redirect(err error, visited []string) (string, bool) {
	var e *Error
	if !errors.As(err, &e) || e.StatusCode != http.StatusMisdirectedRequest || e.Code != "wrong_region" || e.URL == "" ||
		len(visited) > MaxHops {
		return "", false
	}
	next := strings.TrimRight(e.URL, "/")
	for _, v := range visited {
		if v == next {
			return "", false
		}
	}
	return next, true
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

// read decodes a want answer into out, or returns the problem as an *Error.
func (c *Client) read(resp *http.Response, want int, out any) error {
	defer resp.Body.Close()
	if resp.StatusCode != want {
		return responseError(resp)
	}
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

// retryable says whether err after attempt may be retried, and after what pause.
func (c *Client) retryable(err error, attempt int) (time.Duration, bool) {
	if attempt >= c.Retries {
		return 0, false
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
	var ue *url.Error
	if errors.As(err, &ue) || errors.Is(err, io.ErrUnexpectedEOF) {
		return c.backoff(attempt), true // network error
	}
	return 0, false
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
