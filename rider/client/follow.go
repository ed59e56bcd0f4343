package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/understudy/understudy/rider"
)

// Stream is a ride's live status from Follow.
type Stream struct {
	// C receives the ride's current state, then each change. It is closed after a
	// final status, when the context ends, or on an error retrying cannot fix.
	C <-chan rider.Ride

	done chan struct{}
	err  error
	last uint64
}

// Err waits until C is closed and says why: nil after a final status, the context's
// error, or the failure that ended the stream.
func (s *Stream) Err() error {
	<-s.done
	return s.err
}

// LastEventID is the id of the last event received; valid once C is closed.
func (s *Stream) LastEventID() uint64 {
	<-s.done
	return s.last
}

// Follow opens ride id's event stream. A dropped connection is resumed with
// Last-Event-ID (up to Retries times in a row, after a 429's or 503's Retry-After),
// so no change is delivered twice or skipped; when the ride's region cannot be
// reached, or its area was moved, it is resumed, the same way, at the region that has
// the ride now (see Client), waiting while the area changes hands (for up to
// HandOver, however many tries that takes).
// lastEventID resumes from an earlier stream; 0 starts with the current state.
// Errors opening the first connection (unknown ride, bad token) are returned at once;
// a ride that ended at or before lastEventID gives a stream that is already closed.
func (c *Client) Follow(ctx context.Context, id string, lastEventID uint64) (*Stream, error) {
	ch := make(chan rider.Ride, 16)
	s := &Stream{C: ch, done: make(chan struct{}), last: lastEventID}
	resp, err := c.openStream(ctx, id, lastEventID)
	// The ride's area changing hands right now passes within moments.
	began := time.Now()
	for n := 0; inTransit(err) && c.Retries > 0 && (n < c.Retries || time.Since(began) < c.handOver()); n++ {
		if serr := sleep(ctx, c.transitPause(n)); serr != nil {
			return nil, serr
		}
		resp, err = c.openStream(ctx, id, lastEventID)
	}
	if errors.Is(err, errAlreadyFinal) { // nothing newer will ever come
		close(ch)
		close(s.done)
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	go func() {
		defer close(s.done)
		defer close(ch)
		s.err = c.follow(ctx, id, resp, s, ch)
	}()
	return s, nil
}

// follow reads resp and reconnects until a final status, ctx's end or a fatal error.
func (c *Client) follow(ctx context.Context, id string, resp *http.Response, s *Stream, ch chan<- rider.Ride) error {
	failures := 0
	var handing time.Time // when the ride's area began changing hands, as seen here
	for {
		final, err := readEvents(ctx, resp, s, ch)
		resp.Body.Close()
		switch {
		case final:
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case err == nil:
			failures = 0 // a clean end without a final status: the server is draining
		default:
			failures++
		}
		for {
			// While the area changes hands the stream waits it out (HandOver); else
			// it gives up after Retries failures in a row.
			switch {
			case !handingOver(err):
				handing = time.Time{}
			case handing.IsZero():
				handing = time.Now()
			}
			if failures > c.Retries && (handing.IsZero() || time.Since(handing) >= c.handOver()) {
				return fmt.Errorf("follow ride %s: %w", id, err)
			}
			wait := c.backoff(failures)
			if w, ok := c.retryWait(err, failures); ok && err != nil && !networkError(err) {
				wait = w // the answer's Retry-After (no_lease: a hand-over takes a second or so)
			}
			if inTransit(err) {
				wait = c.transitPause(failures)
			}
			if serr := sleep(ctx, wait); serr != nil {
				return serr
			}
			resp, err = c.openStream(ctx, id, s.last)
			if err == nil {
				break
			}
			if errors.Is(err, errAlreadyFinal) {
				return nil
			}
			if _, retry := c.retryWait(err, failures); !retry {
				return err
			}
			failures++
		}
	}
}

// errAlreadyFinal: the server answered 204, the client has the ride's final state.
var errAlreadyFinal = errors.New("ride already final")

func (c *Client) openStream(ctx context.Context, id string, last uint64) (*http.Response, error) {
	path := "/v1/rides/" + url.PathEscape(id) + "/events"
	hdr := http.Header{"Accept": {"text/event-stream"}}
	if last > 0 {
		hdr.Set("Last-Event-ID", strconv.FormatUint(last, 10))
	}
	// One try per region: follow's own loop retries, with backoff.
	resp, _, err := c.exchange(ctx, query{ride: id, method: http.MethodGet, path: path, hdr: hdr,
		want: func(status int) bool { return status == http.StatusOK || status == http.StatusNoContent }})
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusNoContent {
		resp.Body.Close()
		return nil, errAlreadyFinal
	}
	return resp, nil
}

// readEvents delivers the events of one connection; final reports that the last one
// had a final status.
func readEvents(ctx context.Context, resp *http.Response, s *Stream, ch chan<- rider.Ride) (final bool, err error) {
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	var (
		data  strings.Builder
		id    string
		event string
	)
	for sc.Scan() {
		line := sc.Text()
		if line != "" {
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "": // a comment (heartbeat)
			case "data":
				if data.Len() > 0 {
					data.WriteByte('\n')
				}
				data.WriteString(value)
			case "id":
				id = value
			case "event":
				event = value
			}
			continue
		}
		// A blank line dispatches the event.
		if data.Len() == 0 || (event != "" && event != "message") {
			data.Reset()
			id, event = "", ""
			continue
		}
		var r rider.Ride
		if err := json.Unmarshal([]byte(data.String()), &r); err != nil {
			return false, fmt.Errorf("decode ride event: %w", err)
		}
		if n, err := strconv.ParseUint(id, 10, 64); err == nil {
			s.last = n
		}
		data.Reset()
		id, event = "", ""
		select {
		case ch <- r:
		case <-ctx.Done():
			return false, ctx.Err()
		}
		if r.Status.Final() {
			return true, nil
		}
	}
	return false, sc.Err() // nil: the server ended the stream early (it is draining)
}
