package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
	"github.com/understudy/understudy/dispatch/natslog"
	"github.com/understudy/understudy/dispatch/redisstore"
	"github.com/understudy/understudy/dispatch/redisstore/redistest"
	"github.com/understudy/understudy/driver"
	"github.com/understudy/understudy/driver/drivertest"
)

// replicaSet is n `understudy serve` replicas of region seoul sharing one Redis and
// one NATS, each with its own data directory.
type replicaSet struct {
	redisURL string
	servers  []*server
}

func mustStartReplicas(tb testing.TB, n int, extra ...string) *replicaSet {
	tb.Helper()
	rs := &replicaSet{redisURL: redistest.URL(tb)}
	emb, err := natslog.StartEmbedded(tb.TempDir(), "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(emb.Close) // after the servers, which are stopped first
	args := append([]string{"--redis", rs.redisURL, "--nats", emb.URL(), "--region", "seoul", "--match-interval", "0"}, extra...)
	for range n {
		rs.servers = append(rs.servers, mustServe(tb, args...))
	}
	return rs
}

// store opens the replicas' Redis state for the test to inspect.
func (rs *replicaSet) store(tb testing.TB) *redisstore.Store {
	tb.Helper()
	st, err := redisstore.Open(context.Background(), rs.redisURL, redisPrefix)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	return st
}

const redisPrefix = "understudy:seoul:"

// A driver connected to replica A is offered, accepts and completes a ride requested
// on replica B; B's rider stream follows the trip A's driver makes.
func TestReplicasServeOneRegionTogether(t *testing.T) {
	rs := mustStartReplicas(t, 2)
	a, b := rs.servers[0], rs.servers[1]
	d := mustOnline(t, a, "d-1", near)
	dispatchtest.Eventually(t, supplied(b.engine, 1))

	ride, err := b.engine.Riders().RequestRide(context.Background(), "u-1", pickup, dropoff)
	if err != nil {
		t.Fatal(err)
	}
	statuses := followRide(t, b, "u-1", ride.ID)
	o := drivertest.Next(t, d, driver.TypeOffer)
	if o.RideID != ride.ID {
		t.Fatalf("offer = %s, want ride %s", o.Raw, ride.ID)
	}
	send(t, d.Accept(ctx(t), o.OfferID))
	if m := drivertest.Next(t, d, driver.TypeAssigned); m.Ride == nil || m.Ride.ID != ride.ID {
		t.Fatalf("assigned = %s", m.Raw)
	}
	for _, step := range []func(context.Context, string) error{d.Arrived, d.Start, d.Complete} {
		send(t, step(ctx(t), ride.ID))
		drivertest.Next(t, d, driver.TypeRide)
	}
	for name, s := range map[string]*server{"A": a, "B": b} {
		if r, err := s.engine.Riders().Ride(context.Background(), ride.ID); err != nil || r.Status != dispatch.RideCompleted || r.DriverID != "d-1" {
			t.Fatalf("ride on %s = %+v, %v; want completed by d-1", name, r, err)
		}
	}
	// B's rider stream heard every step from A well before its 15 s safety re-read.
	var seen []dispatch.RideStatus
	deadline := time.After(frameWait)
	for len(seen) == 0 || seen[len(seen)-1] != dispatch.RideCompleted {
		select {
		case s := <-statuses:
			seen = append(seen, s)
		case <-deadline:
			t.Fatalf("B's rider stream saw %v, not completed, within %s", seen, frameWait)
		}
	}
	for _, want := range []dispatch.RideStatus{dispatch.RideMatched, dispatch.RideInProgress} {
		if !contains(seen, want) {
			t.Errorf("B's rider stream saw %v, without %s", seen, want)
		}
	}
	dispatchtest.Eventually(t, func() error { return errors.Join(supplied(a.engine, 1)(), supplied(b.engine, 1)()) })
}

func contains[T comparable](xs []T, x T) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// followRide opens s's rider event stream of ride id as rider and returns the statuses
// it carries.
func followRide(tb testing.TB, s *server, rider, id string) <-chan dispatch.RideStatus {
	tb.Helper()
	c, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(c, http.MethodGet, "http://"+s.Addr()+"/v1/rides/"+id+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+mustToken(tb, s, rider, dispatch.RoleRider))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		resp.Body.Close()
		tb.Fatalf("ride events: %s", resp.Status)
	}
	out := make(chan dispatch.RideStatus, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var v struct {
				Status dispatch.RideStatus `json:"status"`
			}
			if json.Unmarshal([]byte(data), &v) == nil {
				out <- v.Status
			}
		}
	}()
	tb.Cleanup(func() { cancel(); <-done })
	return out
}

// Many drivers on two replicas and many requests on both, answered at random: no
// driver ever holds two rides and no ride two drivers, in any snapshot of Redis.
func TestReplicasNeverDoubleAssign(t *testing.T) {
	const (
		drivers = 200
		rides   = 300
	)
	// The drivers here go silent at random: keep them in dispatch however often they do
	// (taking silent drivers offline has its own tests). Offers last 3 s, so that the
	// answers mostly beat them even on a busy machine; a ride whose offers all expire
	// there ends as no_driver after maxSearch, well within the time the test gives a
	// ride to end.
	const maxSearch = 30 * time.Second
	rs := mustStartReplicas(t, 2, "--offer-timeout", "3s", "--max-missed-offers", "0", "--max-search", maxSearch.String())
	st := rs.store(t)
	bg := context.Background()
	rng := rand.New(rand.NewPCG(5, 5))
	hubs := []dispatch.Point{pickup, {Lat: 37.5563, Lng: 126.9236}}
	spot := func() dispatch.Point {
		h := hubs[rng.IntN(len(hubs))]
		return dispatch.Point{Lat: h.Lat + rng.NormFloat64()*0.006, Lng: h.Lng + rng.NormFloat64()*0.008}
	}
	home := map[string]*server{} // driver → the replica it is "connected" to
	for i := range drivers {
		id := fmt.Sprintf("d-%03d", i)
		s := rs.servers[i%2]
		home[id] = s
		if _, err := s.engine.Drivers().Connect(bg, id); err != nil {
			t.Fatal(err)
		}
		if err := s.engine.Drivers().UpdateLocation(bg, id, spot()); err != nil {
			t.Fatal(err)
		}
		if _, err := s.engine.Drivers().SetAvailable(bg, id); err != nil {
			t.Fatal(err)
		}
	}
	dispatchtest.Eventually(t, func() error {
		return errors.Join(supplied(rs.servers[0].engine, drivers)(), supplied(rs.servers[1].engine, drivers)())
	})

	ctx, stop := context.WithCancel(bg)
	defer stop()
	var (
		mu         sync.Mutex
		acceptedBy = map[string]string{} // ride → the driver whose accept won
		requested  = map[string]*server{}
		failed     atomic.Value
		answers    atomic.Int64
		snapshots  atomic.Int64
		wg         sync.WaitGroup
	)
	fail := func(format string, args ...any) {
		failed.CompareAndSwap(nil, fmt.Sprintf(format, args...))
		stop()
	}
	// Each replica answers for its own drivers, as its gateway would: a pass reads every
	// driver at once and answers for each in a goroutine of its own, as each driver's
	// socket would. An offered driver accepts (60%), declines (30%) or lets the offer
	// expire (10%). The engine may refuse an answer with a conflict (the offer expired
	// or went meanwhile); any other error fails the test.
	var silent sync.Map // offers left to expire
	answer := func(s *server, d dispatch.Driver, p int) error {
		refused := func(err error) error {
			if dispatch.ErrorCode(err) == dispatch.ECodeConflict {
				return nil
			}
			return err
		}
		switch d.State {
		case dispatch.DriverOffered:
			if _, ok := silent.Load(d.OfferID); ok {
				return nil
			}
			answers.Add(1)
			switch {
			case p < 6:
				r, err := s.engine.Drivers().Accept(ctx, d.ID, d.OfferID)
				if err != nil {
					return refused(err)
				}
				mu.Lock()
				defer mu.Unlock()
				if prev, ok := acceptedBy[r.ID]; ok {
					return fmt.Errorf("ride %s accepted by %s and %s", r.ID, prev, d.ID)
				}
				acceptedBy[r.ID] = d.ID
			case p < 9:
				return refused(s.engine.Drivers().Decline(ctx, d.ID, d.OfferID))
			default:
				silent.Store(d.OfferID, true)
			}
		case dispatch.DriverEnRoute:
			if _, err := s.engine.Drivers().Arrived(ctx, d.ID, d.RideID); err != nil {
				return err
			}
			_, err := s.engine.Drivers().Start(ctx, d.ID, d.RideID)
			return err
		case dispatch.DriverOnTrip:
			_, err := s.engine.Drivers().Complete(ctx, d.ID, d.RideID)
			return err
		}
		return nil
	}
	for w, s := range rs.servers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 9))
			for ctx.Err() == nil {
				var pass sync.WaitGroup
				err := st.Drivers(ctx, func(d dispatch.Driver) error {
					if home[d.ID] == s {
						p := rng.IntN(10)
						pass.Go(func() {
							if err := answer(s, d, p); err != nil && ctx.Err() == nil {
								fail("driver %s (%s): %v", d.ID, d.State, err)
							}
						})
					}
					return nil
				})
				pass.Wait()
				if err != nil && ctx.Err() == nil {
					fail("read the drivers: %v", err)
				}
				time.Sleep(5 * time.Millisecond) // pacing the passes, not waiting for a condition
			}
		})
	}
	// A watcher checks atomic snapshots of Redis while everything runs.
	rc := redisClient(t, rs.redisURL)
	wg.Go(func() {
		for ctx.Err() == nil {
			rs, ds, err := snapshot(ctx, rc)
			if err != nil {
				if ctx.Err() == nil {
					fail("snapshot: %v", err)
				}
				return
			}
			if err := checkAssignments(rs, ds); err != nil {
				fail("%v", err)
				return
			}
			snapshots.Add(1)
			time.Sleep(20 * time.Millisecond) // pacing the watcher, not waiting for a condition
		}
	})
	began := time.Now()
	for i := range rides {
		s := rs.servers[i%2]
		r, err := s.engine.Riders().RequestRide(bg, fmt.Sprintf("u-%d", i), spot(), dropoff)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		requested[r.ID] = s
		mu.Unlock()
	}
	// Wait for every ride to end, however slow the machine: the test fails when no ride
	// ends for a whole dispatchtest.Patience (longer than maxSearch, by which every ride
	// ends), never on how long all of them take.
	open := maps.Clone(requested) // the rides not final yet; final is for good
	for len(open) > 0 && ctx.Err() == nil {
		before := len(open)
		err := dispatchtest.Within(dispatchtest.Patience, 50*time.Millisecond, func() error {
			waiting := map[dispatch.RideStatus]int{}
			for id := range open {
				r, err := st.Ride(bg, id)
				switch {
				case err != nil:
					return fmt.Errorf("read ride %s: %w", id, err)
				case r.Status.Final():
					delete(open, id)
				default:
					waiting[r.Status]++
				}
			}
			if len(open) < before || len(open) == 0 || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("no ride became final for %s: %d of %d final, the others %v",
				dispatchtest.Patience, rides-len(open), rides, waiting)
		})
		if err != nil {
			fail("%v", err)
		}
	}
	stop()
	wg.Wait()
	if msg := failed.Load(); msg != nil {
		t.Fatal(msg)
	}

	// The final state, read through the Store: every ride completed by the driver whose
	// accept won, or (no accept won) ended without a driver; every driver free; and some
	// rides served across replicas each way.
	cross := map[string]int{} // requesting replica → rides a driver of the other one served
	name := map[*server]string{rs.servers[0]: "A", rs.servers[1]: "B"}
	unserved := 0
	for id, origin := range requested {
		r, err := st.Ride(bg, id)
		if err != nil {
			t.Fatal(err)
		}
		if acceptedBy[id] == "" && r.Status == dispatch.RideNoDriver && r.DriverID == "" {
			unserved++
			continue
		}
		if r.Status != dispatch.RideCompleted || r.DriverID == "" || acceptedBy[id] != r.DriverID {
			t.Fatalf("ride %s = %s by %q, accept won by %q", id, r.Status, r.DriverID, acceptedBy[id])
		}
		if home[r.DriverID] != origin {
			cross[name[origin]]++
		}
	}
	err := st.Drivers(bg, func(d dispatch.Driver) error {
		if d.State != dispatch.DriverAvailable || d.RideID != "" || d.OfferID != "" {
			return fmt.Errorf("driver %s left %s with ride %q offer %q", d.ID, d.State, d.RideID, d.OfferID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(cross) != 2 {
		t.Fatalf("rides served across replicas, by requesting replica: %v; want some each way", cross)
	}
	t.Logf("%d rides final after %s (%d without a driver), %d answers, %d consistent snapshots, cross-replica rides %v",
		rides, time.Since(began).Round(time.Millisecond), unserved, answers.Load(), snapshots.Load(), cross)
}

func redisClient(tb testing.TB, url string) *redis.Client {
	tb.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		tb.Fatal(err)
	}
	c := redis.NewClient(opts)
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// snapshotScript reads every active ride and every driver in one atomic step.
var snapshotScript = redis.NewScript(`
local rides, drivers = {}, {}
for _, id in ipairs(redis.call('SMEMBERS', ARGV[1] .. 'rides:active')) do
  rides[#rides+1] = redis.call('HGET', ARGV[1] .. 'ride:' .. id, 'j') or ''
end
for _, id in ipairs(redis.call('SMEMBERS', ARGV[1] .. 'drivers')) do
  drivers[#drivers+1] = redis.call('HGET', ARGV[1] .. 'driver:' .. id, 'j') or ''
end
return {rides, drivers}
`)

func snapshot(ctx context.Context, rc *redis.Client) ([]dispatch.Ride, map[string]dispatch.Driver, error) {
	res, err := snapshotScript.Run(ctx, rc, nil, redisPrefix).Slice()
	if err != nil {
		return nil, nil, err
	}
	var rides []dispatch.Ride
	for _, j := range res[0].([]any) {
		var r dispatch.Ride
		if err := json.Unmarshal([]byte(j.(string)), &r); err != nil {
			return nil, nil, err
		}
		rides = append(rides, r)
	}
	drivers := map[string]dispatch.Driver{}
	for _, j := range res[1].([]any) {
		var d dispatch.Driver
		if err := json.Unmarshal([]byte(j.(string)), &d); err != nil {
			return nil, nil, err
		}
		drivers[d.ID] = d
	}
	return rides, drivers, nil
}

// checkAssignments reports a driver with two rides (offered or assigned), a ride with
// two drivers, or a driver and a ride that disagree about each other.
func checkAssignments(rides []dispatch.Ride, drivers map[string]dispatch.Driver) error {
	holder := map[string]string{} // driver → the active ride that names it
	for _, r := range rides {
		if r.Status.Final() {
			continue
		}
		var names []string
		if r.Offer != nil {
			names = append(names, r.Offer.DriverID)
		}
		if r.DriverID != "" {
			names = append(names, r.DriverID)
		}
		if len(names) > 1 {
			return fmt.Errorf("ride %s (%s) has two drivers: offer to %s, assigned to %s", r.ID, r.Status, names[0], names[1])
		}
		if r.Status != dispatch.RideSearching && len(names) == 0 {
			return fmt.Errorf("ride %s is %s without a driver", r.ID, r.Status)
		}
		for _, id := range names {
			if prev, ok := holder[id]; ok {
				return fmt.Errorf("driver %s has two rides: %s and %s", id, prev, r.ID)
			}
			holder[id] = r.ID
			d := drivers[id]
			if d.RideID != r.ID || (r.Offer != nil && (d.State != dispatch.DriverOffered || d.OfferID != r.Offer.ID)) {
				return fmt.Errorf("ride %s names driver %s, whose record says %s ride %q offer %q", r.ID, id, d.State, d.RideID, d.OfferID)
			}
		}
	}
	for _, d := range drivers {
		switch d.State {
		case dispatch.DriverOffered, dispatch.DriverEnRoute, dispatch.DriverOnTrip:
			if holder[d.ID] != d.RideID {
				return fmt.Errorf("driver %s is %s with ride %s, which does not name it", d.ID, d.State, d.RideID)
			}
		}
	}
	return nil
}

// A replica stopped mid-offer: the survivor expires its offer and offers the ride to
// the next driver within the offer timeout plus the sweep interval, and adopts the
// ride it was still searching a driver for.
func TestSurvivorCarriesOnStoppedReplicasRides(t *testing.T) {
	const offerTimeout = 500 * time.Millisecond
	rs := mustStartReplicas(t, 2, "--offer-timeout", offerTimeout.String())
	a, b := rs.servers[0], rs.servers[1]
	d1 := mustOnline(t, b, "d-1", near)
	d2 := mustOnline(t, b, "d-2", farther)
	dispatchtest.Eventually(t, supplied(a.engine, 2))

	offered, err := a.engine.Riders().RequestRide(context.Background(), "u-1", pickup, dropoff)
	if err != nil {
		t.Fatal(err)
	}
	o1 := drivertest.Next(t, d1, driver.TypeOffer) // A's offer, delivered by B's gateway
	heard := time.Now()
	// Far from every driver: it stays in A's queue.
	busan := dispatch.Point{Lat: 35.1151, Lng: 129.0422}
	searching, err := a.engine.Riders().RequestRide(context.Background(), "u-2", busan, dispatch.Point{Lat: 35.1796, Lng: 129.0756})
	if err != nil {
		t.Fatal(err)
	}
	dispatchtest.Eventually(t, func() error {
		if n := a.engine.Pending(); n != 1 {
			return fmt.Errorf("A queues %d rides, want the far one", n)
		}
		return nil
	})
	stopServer(t, a)

	if m := drivertest.Next(t, d1, driver.TypeOfferRevoked); m.OfferID != o1.OfferID || m.Reason != dispatch.ReasonExpired {
		t.Fatalf("revoked = %s, want offer %s expired", m.Raw, o1.OfferID)
	}
	o2 := drivertest.Next(t, d2, driver.TypeOffer)
	took := time.Since(heard)
	sweep := dispatch.DefaultConfig().SweepInterval
	if o2.RideID != offered.ID || took > offerTimeout+sweep {
		t.Fatalf("second offer = %s after %s, want ride %s within %s", o2.Raw, took, offered.ID, offerTimeout+sweep)
	}
	send(t, d2.Accept(ctx(t), o2.OfferID))
	drivertest.Next(t, d2, driver.TypeAssigned)
	t.Logf("the survivor offered the stopped replica's ride to the next driver %s after the first offer (timeout %s)", took, offerTimeout)

	// A driver appears near the ride A was searching for: the survivor adopts it.
	start := time.Now()
	d3 := mustOnline(t, b, "d-3", busan)
	select {
	case m := <-d3.Frames():
		if m.Type != driver.TypeOffer || m.RideID != searching.ID {
			t.Fatalf("d-3 got %s, want an offer of ride %s", m.Raw, searching.ID)
		}
	case <-time.After(3*sweep + time.Second):
		t.Fatalf("the orphaned ride was not offered within %s", 3*sweep+time.Second)
	}
	t.Logf("the survivor adopted the stopped replica's searching ride and offered it %s after a driver appeared", time.Since(start))
}
