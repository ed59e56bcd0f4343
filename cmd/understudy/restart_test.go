package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
	"github.com/understudy/understudy/dispatch/redisstore/redistest"
	"github.com/understudy/understudy/driver"
	"github.com/understudy/understudy/driver/client"
	"github.com/understudy/understudy/rider"
)

// TestRestartKeepsKeysVersionsAndLocations runs the real binary, on the embedded
// default and on Redis, stops it with SIGKILL or SIGTERM and starts it again on the
// same data, and checks what a rider app relies on across the restart:
//   - a replayed ride request (same Idempotency-Key and body) answers the ride it
//     created before, another body with the key is still 422, and concurrent
//     duplicates of a new key create one ride;
//   - an event stream resumed with the Last-Event-ID it had before the restart gets
//     the states that followed (matched), and a finished ride's stream resumed at its
//     final event gets 204, not the final state again;
//   - the driver's position reaches GET and the event stream once the driver reports.
func TestRestartKeepsKeysVersionsAndLocations(t *testing.T) {
	for _, store := range []string{"embedded default", "redis"} {
		for _, stop := range []string{"kill -9", "clean restart"} {
			t.Run(store+", "+stop, func(t *testing.T) {
				w := &crashWorld{tb: t, dataDir: t.TempDir(), drivers: map[string]*client.Client{}}
				w.args = []string{"--addr", freeAddr(t), "--data-dir", w.dataDir, "--match-interval", "0",
					"--offer-timeout", "1m", "--max-search", "1h", "--rider-rate", "1000", "--rider-burst", "1000",
					"--sse-heartbeat", "200ms", "--sse-location-interval", "100ms", "--driver-grace", "1h"}
				if store == "redis" {
					w.args = append(w.args, "--redis", redistest.URL(t), "--region", "restart")
				}
				w.proc = startProc(t, w.args...)
				restart := func() {
					if stop == "kill -9" {
						w.proc.kill()
					} else {
						w.proc.stop(t)
					}
					w.proc = startProc(t, w.args...)
				}
				testRestart(t, w, restart)
			})
		}
	}
}

func testRestart(t *testing.T, w *crashWorld, restart func()) {
	ctx := context.Background()
	gangnam := dispatch.Point{Lat: 37.4979, Lng: 127.0276}
	busan := dispatch.Point{Lat: 35.1796, Lng: 129.0756}
	jeju := dispatch.Point{Lat: 33.4996, Lng: 126.5312} // nobody near: the keyed rides search on
	body := map[string]any{"pickup": jeju, "dropoff": offset(jeju, 2000, 0)}
	other := map[string]any{"pickup": jeju, "dropoff": offset(jeju, 3000, 0)}

	// A ride requested with a key: its rider may retry at any time within the TTL.
	resp, b := w.do("POST", "/v1/rides", body, "Idempotency-Key", "key-1")
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /v1/rides = %d %s", resp.StatusCode, b)
	}
	keyed := decodeRide(t, b).ID

	// A ride whose driver declined: it searches on at a version above 1.
	w.online("d-decliner", offset(gangnam, 100, 0))
	searching := w.request(gangnam)
	o := w.next("d-decliner", driver.TypeOffer)
	if err := w.drivers["d-decliner"].Decline(ctx, o.OfferID); err != nil {
		t.Fatal(err)
	}
	w.next("d-decliner", driver.TypeAck)
	before := w.events(searching, "")
	ev := before.nextRide(t)
	if ev.ride.Status != dispatch.RideSearching || ev.id < 2 {
		t.Fatalf("first event of the declined ride: id %d %+v; want searching, past version 1", ev.id, ev.ride)
	}
	lastSeen := ev.id
	before.close()

	// A finished ride, followed to its end.
	w.online("d-busan", offset(busan, 100, 0))
	done := w.request(offset(busan, 50, 0))
	w.trip("d-busan", done, "accept", "arrived", "start", "complete")
	final := w.events(done, "")
	ev = final.nextRide(t)
	if ev.ride.Status != dispatch.RideCompleted {
		t.Fatalf("finished ride's stream: %+v", ev.ride)
	}
	finalID := ev.id
	final.ended(t)

	restart()

	// The key still names the ride it created.
	resp, b = w.do("POST", "/v1/rides", body, "Idempotency-Key", "key-1")
	if resp.StatusCode != http.StatusCreated || decodeRide(t, b).ID != keyed || resp.Header.Get(rider.ReplayedHeader) != "true" {
		t.Errorf("replay after the restart = %d %s %s: %s; want 201 replaying %s",
			resp.StatusCode, rider.ReplayedHeader, resp.Header.Get(rider.ReplayedHeader), b, keyed)
	}
	if resp, b = w.do("POST", "/v1/rides", other, "Idempotency-Key", "key-1"); resp.StatusCode != http.StatusUnprocessableEntity {
		t.Errorf("the key with another body after the restart = %d %s, want 422", resp.StatusCode, b)
	}
	// Concurrent duplicates of a new key still create one ride.
	ids := make(chan string, 8)
	var wg sync.WaitGroup
	for range cap(ids) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, b := w.do("POST", "/v1/rides", body, "Idempotency-Key", "key-2")
			if resp.StatusCode != http.StatusCreated {
				t.Errorf("concurrent duplicate = %d %s", resp.StatusCode, b)
				return
			}
			ids <- decodeRide(t, b).ID
		}()
	}
	wg.Wait()
	close(ids)
	seen := map[string]bool{}
	for id := range ids {
		seen[id] = true
	}
	if len(seen) != 1 {
		t.Errorf("concurrent duplicates created %d rides: %v", len(seen), seen)
	}

	// The finished ride's stream resumed at its final event has nothing more to say.
	if resp, b := w.do("GET", "/v1/rides/"+done+"/events", nil, "Last-Event-ID", strconv.FormatUint(finalID, 10)); resp.StatusCode != http.StatusNoContent {
		t.Errorf("finished ride's stream resumed at its final event %d = %d %q, want 204", finalID, resp.StatusCode, b)
	}

	// Another driver takes the declined ride; the resumed stream shows it matched.
	w.online("d-taker", offset(gangnam, 200, 0))
	w.trip("d-taker", searching, "accept")
	after := w.events(searching, strconv.FormatUint(lastSeen, 10))
	ev = after.nextRide(t)
	if ev.ride.Status != dispatch.RideMatched || ev.id <= lastSeen || ev.ride.Driver == nil || ev.ride.Driver.ID != "d-taker" {
		t.Fatalf("stream resumed at %d after the restart: id %d %+v; want matched to d-taker, newer", lastSeen, ev.id, ev.ride)
	}

	// The driver's position, as its app reports it, shows on GET and on the stream.
	here := offset(gangnam, 150, 0)
	if err := w.drivers["d-taker"].Location(ctx, here); err != nil {
		t.Fatal(err)
	}
	dispatchtest.Eventually(t, func() error {
		resp, b := w.do("GET", "/v1/rides/"+searching, nil)
		if r := decodeRide(t, b); resp.StatusCode != 200 || r.Driver == nil || r.Driver.Location == nil || *r.Driver.Location != here {
			return fmt.Errorf("GET ride = %d %s, want driver d-taker at %v", resp.StatusCode, b, here)
		}
		return nil
	})
	loc := after.next(t, func(e sseEvent) bool { return e.event == "location" })
	if loc.ride.Driver == nil || loc.ride.Driver.Location == nil || *loc.ride.Driver.Location != here || loc.ride.Status != dispatch.RideMatched {
		t.Fatalf("location event %+v, want the matched ride with its driver at %v", loc.ride, here)
	}
	after.close()
	if t.Failed() {
		t.Logf("server log: %s", w.proc.stderr())
	}
}

// stop ends the process with SIGTERM, as an operator would, and waits for it.
func (p *proc) stop(tb testing.TB) {
	tb.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(dispatchtest.Patience):
		tb.Fatalf("understudy did not stop within %s of SIGTERM: %s", dispatchtest.Patience, p.stderr())
	}
}

// do calls the rider API as rider u-1; hdr is name, value pairs. It returns the
// response (body read and closed) and its body.
func (w *crashWorld) do(method, path string, body any, hdr ...string) (*http.Response, []byte) {
	w.tb.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+w.proc.addr+path, rd)
	req.Header.Set("Authorization", "Bearer "+w.token("u-1", dispatch.RoleRider))
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		w.tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		w.tb.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp, b
}

func decodeRide(tb testing.TB, b []byte) rider.Ride {
	tb.Helper()
	var r rider.Ride
	if err := json.Unmarshal(b, &r); err != nil {
		tb.Fatalf("decode ride from %s: %v", b, err)
	}
	return r
}

// sseEvent is one event of a ride's stream: its id (0 when it had none), its type
// ("" for the default) and its ride.
type sseEvent struct {
	id    uint64
	event string
	ride  rider.Ride
}

// sseConn is an open event stream whose events a goroutine reads.
type sseConn struct {
	events chan sseEvent
	err    error // why the stream ended; read after events is closed
	cancel context.CancelFunc
}

// events opens ride id's event stream as rider u-1, resuming at last unless "".
func (w *crashWorld) events(id, last string) *sseConn {
	w.tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+w.proc.addr+"/v1/rides/"+id+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+w.token("u-1", dispatch.RoleRider))
	if last != "" {
		req.Header.Set("Last-Event-ID", last)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		w.tb.Fatalf("open the events of %s: %v", id, err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		w.tb.Fatalf("open the events of %s: %d %s", id, resp.StatusCode, b)
	}
	c := &sseConn{events: make(chan sseEvent, 256), cancel: cancel}
	w.tb.Cleanup(c.close)
	go func() {
		defer close(c.events)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		var (
			ev   sseEvent
			data string
		)
		for sc.Scan() {
			field, value, _ := strings.Cut(sc.Text(), ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "id":
				ev.id, _ = strconv.ParseUint(value, 10, 64)
			case "event":
				ev.event = value
			case "data":
				data = value
			case "": // a comment, or the blank line that ends an event
				if sc.Text() != "" || data == "" {
					continue
				}
				if err := json.Unmarshal([]byte(data), &ev.ride); err != nil {
					c.err = fmt.Errorf("decode event data %s: %w", data, err)
					return
				}
				c.events <- ev
				ev, data = sseEvent{}, ""
			}
		}
		c.err = sc.Err()
	}()
	return c
}

// next returns the next event that match accepts (any when nil), failing if the
// stream ends first.
func (c *sseConn) next(tb testing.TB, match func(sseEvent) bool) sseEvent {
	tb.Helper()
	deadline := time.After(dispatchtest.Patience)
	for {
		select {
		case ev, ok := <-c.events:
			if !ok {
				tb.Fatalf("the stream ended (%v) before the event awaited", c.err)
			}
			if match == nil || match(ev) {
				return ev
			}
		case <-deadline:
			tb.Fatalf("no such event within %s", dispatchtest.Patience)
		}
	}
}

// nextRide returns the next ride event of the default type (status changes),
// skipping location events.
func (c *sseConn) nextRide(tb testing.TB) sseEvent {
	tb.Helper()
	return c.next(tb, func(e sseEvent) bool { return e.event == "" })
}

// ended waits for the stream to end, failing on any further ride event.
func (c *sseConn) ended(tb testing.TB) {
	tb.Helper()
	deadline := time.After(dispatchtest.Patience)
	for {
		select {
		case ev, ok := <-c.events:
			if !ok {
				if c.err != nil && !errors.Is(c.err, context.Canceled) {
					tb.Fatalf("the stream ended with %v", c.err)
				}
				return
			}
			if ev.event == "" {
				tb.Fatalf("the stream goes on with %+v, want its end", ev)
			}
		case <-deadline:
			tb.Fatalf("the stream did not end within %s", dispatchtest.Patience)
		}
	}
}

func (c *sseConn) close() {
	c.cancel()
	for range c.events { // let the reader finish
	}
}
