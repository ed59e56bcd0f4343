package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/jwtauth"
	"github.com/understudy/understudy/dispatch/memstore"
	"github.com/understudy/understudy/dispatch/problem"
	"github.com/understudy/understudy/rider"
	"github.com/understudy/understudy/rider/client"
)

// deployment is a test deployment of regions, each the real rider API on its own
// engine, behind a server that also answers GET /v1/regions with every region.
type deployment struct {
	tb      testing.TB
	keys    *jwtauth.Keys
	mu      sync.Mutex
	regions []*region
}

// region is one region of a deployment; it records the requests it was sent.
type region struct {
	srv     *httptest.Server
	handler atomic.Pointer[http.Handler] // nil: not serving yet (503)
	down    atomic.Bool                  // what GET /v1/regions says of it
	mu      sync.Mutex
	got     []seen
}

// seen is one request a region got.
type seen struct {
	method, path, lastEventID, key, body string
}

func newDeployment(tb testing.TB) *deployment {
	return &deployment{tb: tb, keys: &jwtauth.Keys{Secret: []byte("0123456789abcdef0123456789abcdef")}}
}

func (d *deployment) token(sub string) string {
	d.tb.Helper()
	tok, err := d.keys.Sign(dispatch.Identity{Subject: sub, Role: dispatch.RoleRider}, time.Hour)
	if err != nil {
		d.tb.Fatal(err)
	}
	return tok
}

// add starts a region that answers 503 until serve.
func (d *deployment) add() *region {
	rg := &region{}
	rg.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/regions" {
			d.view(w)
			return
		}
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		rg.mu.Lock()
		rg.got = append(rg.got, seen{r.Method, r.URL.Path, r.Header.Get("Last-Event-ID"), r.Header.Get(rider.IdempotencyKeyHeader), string(body)})
		rg.mu.Unlock()
		h := rg.handler.Load()
		if h == nil {
			problem.Write(w, r, dispatch.Errorf(dispatch.ECodeUnavailable, "not serving yet"))
			return
		}
		(*h).ServeHTTP(w, r)
	}))
	d.tb.Cleanup(rg.kill)
	d.mu.Lock()
	d.regions = append(d.regions, rg)
	d.mu.Unlock()
	return rg
}

func (d *deployment) view(w http.ResponseWriter) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v := dispatch.RegionsView{Areas: []dispatch.AreaView{}}
	for i, rg := range d.regions {
		up := !rg.down.Load()
		v.Regions = append(v.Regions, dispatch.RegionView{Name: fmt.Sprint("r", i), URL: rg.srv.URL, Up: &up})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// serve opens the rider API in rg on an engine over store with epoch: a takeover,
// when store is another region's and epoch above its.
func (d *deployment) serve(rg *region, store dispatch.Store, epoch uint64) {
	d.tb.Helper()
	ctx := context.Background()
	engine := &dispatch.Engine{Store: store, Config: dispatch.DefaultConfig(), Epoch: epoch}
	api := &rider.API{Engine: engine.Riders(), Verifier: d.keys, Idempotency: memstore.NewIdempotencyStore(), Config: rider.DefaultConfig()}
	engine.Notifier = api
	if err := engine.Open(ctx); err != nil {
		d.tb.Fatal(err)
	}
	d.tb.Cleanup(func() { _ = engine.Close() })
	if err := api.Open(ctx); err != nil {
		d.tb.Fatal(err)
	}
	d.tb.Cleanup(func() { _ = api.Close() })
	h := api.Handler()
	rg.handler.Store(&h)
}

// kill ends the region's server and every connection to it, as a crash would.
func (rg *region) kill() {
	rg.srv.CloseClientConnections()
	rg.srv.Close()
}

func (rg *region) requests() []seen {
	rg.mu.Lock()
	defer rg.mu.Unlock()
	return slices.Clone(rg.got)
}

// A region dies under a rider who follows a ride: the stream resumes, with the last
// event's id, at the region that took the ride over, passing over a region that does
// not have it; the rider sees each state once. Cancel finds the ride there too.
func TestFollowFailsOverToTheRegionThatHasTheRide(t *testing.T) {
	d := newDeployment(t)
	home, other, successor := d.add(), d.add(), d.add()
	store := memstore.New()
	d.serve(home, store, 1)
	d.serve(other, memstore.New(), 1) // has its own rides only
	c := fast(client.New(home.srv.URL, d.token("u-1")))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	ride, err := c.RequestRide(ctx, trip, "")
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Follow(ctx, ride.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	first := <-st.C
	if first.Status != dispatch.RideSearching {
		t.Fatalf("first event %+v", first)
	}
	stored, err := store.Ride(ctx, ride.ID)
	if err != nil {
		t.Fatal(err)
	}
	firstID := fmt.Sprint(stored.Version) // the first event's id: nothing changed since

	d.serve(successor, store, 2) // takes home's rides over (and fences home out)
	home.kill()
	if got, err := c.Cancel(ctx, ride.ID); err != nil || got.Status != dispatch.RideCancelled {
		t.Fatalf("cancel after home died: %+v %v", got, err)
	}
	statuses := drain(st)
	if err := st.Err(); err != nil || fmt.Sprint(statuses) != "[cancelled]" {
		t.Fatalf("after the failover the stream gave %v and ended with %v, want [cancelled] and nil", statuses, err)
	}
	if c.RideURL(ride.ID) != successor.srv.URL {
		t.Errorf("ride's region %s, want the successor %s", c.RideURL(ride.ID), successor.srv.URL)
	}
	resumed := false
	for _, s := range successor.requests() {
		if s.path == "/v1/rides/"+ride.ID+"/events" {
			resumed = true
			if s.lastEventID != firstID {
				t.Errorf("stream resumed at the successor with Last-Event-ID %q, want %q", s.lastEventID, firstID)
			}
		}
	}
	if !resumed {
		t.Errorf("the stream never resumed at the successor: it got %v", successor.requests())
	}
	if n := len(other.requests()); n == 0 {
		t.Errorf("the region without the ride was never asked (it is before the successor in the view)")
	}
}

// A ride whose region is down, and that no live region has: the call says the
// region cannot be reached, not that the ride does not exist.
func TestRideNobodyElseHasIsNotUnknown(t *testing.T) {
	d := newDeployment(t)
	home, other := d.add(), d.add()
	d.serve(home, memstore.New(), 1)
	d.serve(other, memstore.New(), 1)
	c := fast(client.New(home.srv.URL, d.token("u-1")))
	ctx := context.Background()
	ride, err := c.RequestRide(ctx, trip, "")
	if err != nil {
		t.Fatal(err)
	}
	home.kill()
	for name, call := range map[string]func() (rider.Ride, error){
		"ride":   func() (rider.Ride, error) { return c.Ride(ctx, ride.ID) },
		"cancel": func() (rider.Ride, error) { return c.Cancel(ctx, ride.ID) },
	} {
		if _, err := call(); err == nil || client.Code(err) != "" {
			t.Errorf("%s of a ride only a dead region has: %v, want the network error", name, err)
		}
	}
	if _, err := c.Follow(ctx, ride.ID, 0); err == nil || client.Code(err) != "" {
		t.Errorf("follow of a ride only a dead region has: %v, want the network error", err)
	}
	if n := len(other.requests()); n == 0 {
		t.Errorf("the other region was never asked")
	}
}

// A ride request at a dead region goes on to a live one with the same body and
// Idempotency-Key, whether the client learned the regions before the region died
// (from it, on its first call) or is told of them (Regions) because it was dead
// from the start.
func TestRequestRideFailsOverWithTheSameKey(t *testing.T) {
	for _, tc := range []struct {
		name  string
		seeds bool
	}{{"learned before the region died", false}, {"seeded, dead from the start", true}} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDeployment(t)
			dead, live := d.add(), d.add()
			d.serve(dead, memstore.New(), 1)
			d.serve(live, memstore.New(), 1)
			c := fast(client.New(dead.srv.URL, d.token("u-1")))
			ctx := context.Background()
			if tc.seeds {
				c.Regions = []string{dead.srv.URL, live.srv.URL}
			} else if _, err := c.Estimate(ctx, trip); err != nil {
				t.Fatal(err)
			}
			dead.kill()
			key := client.NewKey()
			ride, err := c.RequestRide(ctx, trip, key)
			if err != nil {
				t.Fatalf("request with its region dead: %v", err)
			}
			if c.RideURL(ride.ID) != live.srv.URL {
				t.Errorf("ride kept at %s, want %s", c.RideURL(ride.ID), live.srv.URL)
			}
			again, err := c.RequestRide(ctx, trip, key)
			if err != nil || again.ID != ride.ID {
				t.Errorf("same key again: %+v %v, want ride %s", again, err, ride.ID)
			}
			var posts []seen
			for _, s := range live.requests() {
				if s.path == "/v1/rides" {
					posts = append(posts, s)
				}
			}
			want, _ := json.Marshal(trip)
			if len(posts) != 2 || posts[0].key != key || posts[1].key != key || posts[0].body != string(want) {
				t.Errorf("the live region got %+v, want two requests with key %s and body %s", posts, key, want)
			}
			if got, err := c.Ride(ctx, ride.ID); err != nil || got.ID != ride.ID {
				t.Errorf("ride after the failover: %+v %v", got, err)
			}
		})
	}
}

// Failover prefers the regions GET /v1/regions says are up, wherever they are in the
// deployment's order.
func TestFailoverPrefersRegionsThatAreUp(t *testing.T) {
	d := newDeployment(t)
	home, down, live := d.add(), d.add(), d.add()
	d.serve(home, memstore.New(), 1)
	down.down.Store(true) // and not serving: 503
	d.serve(live, memstore.New(), 1)
	c := fast(client.New(home.srv.URL, d.token("u-1")))
	ctx := context.Background()
	if _, err := c.Estimate(ctx, trip); err != nil {
		t.Fatal(err)
	}
	home.kill()
	ride, err := c.RequestRide(ctx, trip, "")
	if err != nil || c.RideURL(ride.ID) != live.srv.URL {
		t.Fatalf("request with its region dead: ride at %s, %v; want it at the live region %s", c.RideURL(ride.ID), err, live.srv.URL)
	}
	if got := down.requests(); len(got) != 0 {
		t.Errorf("the region marked down was asked first: %+v", got)
	}
}

// A live region that sends the call on (421) to the region it could not reach: the
// error says that region cannot be reached, not that the client ran out of hops.
func TestWrongRegionToADeadRegionSaysItIsUnreachable(t *testing.T) {
	var dead, live *httptest.Server
	live = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/regions" {
			fmt.Fprintf(w, `{"regions":[{"name":"dead","url":%q,"up":false},{"name":"live","url":%q,"up":true}],"areas":[]}`, dead.URL, live.URL)
			return
		}
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusMisdirectedRequest)
		fmt.Fprintf(w, `{"status":421,"code":"wrong_region","region":"dead","url":%q}`, dead.URL)
	}))
	defer live.Close()
	dead = httptest.NewServer(http.NotFoundHandler()) // after live, which must not get its port
	dead.Close()
	c := fast(client.New(dead.URL, "tok"))
	c.Regions = []string{dead.URL, live.URL}
	_, err := c.Estimate(context.Background(), trip)
	if err == nil || errors.Is(err, client.ErrWrongRegion) || client.Code(err) != "" {
		t.Fatalf("estimate whose region is dead: %v, want the network error", err)
	}
}

// moveTo makes rg answer every call 421 wrong_region naming to, as a region that
// handed an area over does, and ends its open streams.
func moveTo(rg, to *region) {
	h := http.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		problem.Write(w, r, &dispatch.Error{Code: dispatch.ECodeWrongRegion, Message: "moved",
			Redirect: &dispatch.Redirect{Region: "to", URL: to.srv.URL}})
	}))
	rg.handler.Store(&h)
	rg.srv.CloseClientConnections()
}

// first makes rg answer its first n calls with answer, then serve as it does.
func first(rg *region, n int, answer http.HandlerFunc) {
	serve := *rg.handler.Load()
	var calls atomic.Int32
	h := http.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) <= int32(n) {
			answer(w, r)
			return
		}
		serve.ServeHTTP(w, r)
	}))
	rg.handler.Store(&h)
}

// moving is a deployment of two regions over one store while an area moves between
// them: from serves it, to not yet; c is a fast client of u-1 at from, and ctx
// bounds its calls (a minute).
type moving struct {
	d        *deployment
	from, to *region
	store    dispatch.Store
	c        *client.Client
	ctx      context.Context
}

func newMoving(t *testing.T) *moving {
	m := &moving{d: newDeployment(t), store: memstore.New()}
	m.from, m.to = m.d.add(), m.d.add()
	m.d.serve(m.from, m.store, 1)
	m.c = fast(client.New(m.from.srv.URL, m.d.token("u-1")))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	m.ctx = ctx
	return m
}

// takes opens to on the same store at a higher epoch: it has the area's rides.
func (m *moving) takes() { m.d.serve(m.to, m.store, 2) }

// followed requests a ride through c and follows it, past its first event.
func followed(ctx context.Context, t *testing.T, c *client.Client) (rider.Ride, *client.Stream) {
	t.Helper()
	ride, err := c.RequestRide(ctx, trip, "")
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Follow(ctx, ride.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if r := <-st.C; r.Status != dispatch.RideSearching {
		t.Fatalf("first event %+v", r)
	}
	return ride, st
}

// notYet answers as a region that has not adopted a ride yet did before it said so.
func notYet(w http.ResponseWriter, r *http.Request) { problem.Write(w, r, dispatch.ErrRideNotFound) }

// An area moved while a rider follows a ride in it: the region that gave it up sends
// the client on (421) to the region that took it, which answers 404 until it has
// adopted the area's rides, a few times or, on a busy region, many more times than
// the client's Retries. The stream waits for it (HandOver) and resumes there, and
// the rider sees each state once, with no error.
func TestFollowWaitsForTheRegionAnAreaMovedTo(t *testing.T) {
	for _, refusals := range []int{3, 10 * 4} { // 4: the client's Retries
		t.Run(fmt.Sprint(refusals, " refusals"), func(t *testing.T) {
			m := newMoving(t)
			c, ctx, to := m.c, m.ctx, m.to
			ride, st := followed(ctx, t, c)

			m.takes() // has the ride once it has adopted it...
			first(to, refusals, notYet)
			moveTo(m.from, to)
			if got, err := c.Cancel(ctx, ride.ID); err != nil || got.Status != dispatch.RideCancelled {
				t.Fatalf("cancel after the move: %+v %v", got, err)
			}
			statuses := drain(st)
			if err := st.Err(); err != nil || fmt.Sprint(statuses) != "[cancelled]" {
				t.Fatalf("after the move the stream gave %v and ended with %v, want [cancelled] and nil", statuses, err)
			}
			if c.RideURL(ride.ID) != to.srv.URL {
				t.Errorf("ride's region %s, want %s", c.RideURL(ride.ID), to.srv.URL)
			}
		})
	}
}

// A read of a ride whose area was just moved: the region the 421 names answers 503
// no_lease while it adopts the area's rides, more times than the client's Retries;
// the read waits the hand-over out (HandOver) and gets the ride there.
func TestRideWaitsOutATakingRegion(t *testing.T) {
	m := newMoving(t)
	c, ctx, to := m.c, m.ctx, m.to
	ride, err := c.RequestRide(ctx, trip, "")
	if err != nil {
		t.Fatal(err)
	}
	m.takes()
	first(to, 10*c.Retries, func(w http.ResponseWriter, r *http.Request) {
		problem.Write(w, r, &dispatch.Error{Code: dispatch.ECodeNoLease, Message: "taking the area over", RetryAfterS: 1})
	})
	moveTo(m.from, to)
	began := time.Now()
	if got, err := c.Ride(ctx, ride.ID); err != nil || got.ID != ride.ID {
		t.Fatalf("ride while the region it moved to takes the area over: %+v %v, want the ride", got, err)
	}
	if waited := time.Since(began); waited > 10*time.Second {
		t.Errorf("the read took %s: it waited each no_lease's Retry-After, not the hand-over's short pauses", waited)
	}
}

// A stream whose hand-over outlasts HandOver ends with the last answer, no sooner.
func TestFollowGivesUpAfterHandOver(t *testing.T) {
	m := newMoving(t)
	c := m.c
	c.HandOver = 300 * time.Millisecond
	_, st := followed(m.ctx, t, c)
	h := http.Handler(http.HandlerFunc(notYet))
	m.to.handler.Store(&h)
	began := time.Now()
	moveTo(m.from, m.to)
	drain(st)
	if err := st.Err(); !strings.Contains(fmt.Sprint(err), "not found") {
		t.Fatalf("a hand-over that never ends: the stream ended with %v, want the last answer (not found)", err)
	}
	if waited := time.Since(began); waited < c.HandOver {
		t.Fatalf("the stream gave up after %s, before its HandOver of %s", waited, c.HandOver)
	}
}

// During a move each region may, for a moment, say the other serves the ride's area:
// the call waits and asks again, and gets the ride from the region that took it.
func TestRideWaitsWhileRegionsDisagree(t *testing.T) {
	m := newMoving(t)
	c, ctx, from, to := m.c, m.ctx, m.from, m.to
	ride, err := c.RequestRide(ctx, trip, "")
	if err != nil {
		t.Fatal(err)
	}
	m.takes()
	first(to, 2, func(w http.ResponseWriter, r *http.Request) {
		problem.Write(w, r, &dispatch.Error{Code: dispatch.ECodeWrongRegion, Message: "not yet",
			Redirect: &dispatch.Redirect{Region: "from", URL: from.srv.URL}})
	})
	moveTo(from, to)
	if got, err := c.Ride(ctx, ride.ID); err != nil || got.ID != ride.ID {
		t.Fatalf("ride while the regions disagree: %+v %v, want the ride", got, err)
	}
	if n := len(to.requests()); n != 3 {
		t.Errorf("the region that took the area was asked %d times, want 3", n)
	}
}

// A resumed stream answered 503 with Retry-After waits that long before it asks
// again (a hand-over takes about a second), however short its own backoff.
func TestFollowWaitsRetryAfter(t *testing.T) {
	d := newDeployment(t)
	home := d.add()
	d.serve(home, memstore.New(), 1)
	c := fast(client.New(home.srv.URL, d.token("u-1")))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ride, err := c.RequestRide(ctx, trip, "")
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Follow(ctx, ride.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	<-st.C
	var mu sync.Mutex
	var refused []time.Time
	first(home, 2, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		refused = append(refused, time.Now())
		mu.Unlock()
		problem.Write(w, r, &dispatch.Error{Code: dispatch.ECodeNoLease, Message: "hand-over", RetryAfterS: 1})
	})
	home.srv.CloseClientConnections()
	for deadline := time.Now().Add(30 * time.Second); ; { // the stream is refused twice
		mu.Lock()
		n := len(refused)
		mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stream was asked again %d times in 30 s, want 2", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got, err := c.Cancel(ctx, ride.ID); err != nil || got.Status != dispatch.RideCancelled {
		t.Fatalf("cancel: %+v %v", got, err)
	}
	for range st.C {
	}
	if err := st.Err(); err != nil {
		t.Fatalf("the stream ended with %v, want the final status", err)
	}
	mu.Lock()
	defer mu.Unlock()
	for i := 1; i < len(refused); i++ {
		if gap := refused[i].Sub(refused[i-1]); gap < 900*time.Millisecond {
			t.Errorf("asked again %s after a Retry-After of 1 s", gap)
		}
	}
}
