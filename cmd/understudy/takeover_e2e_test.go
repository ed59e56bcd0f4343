package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/uber/h3-go/v4"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
	"github.com/understudy/understudy/dispatch/jwtauth"
	"github.com/understudy/understudy/dispatch/natslog"
	"github.com/understudy/understudy/driver"
	"github.com/understudy/understudy/driver/client"
	"github.com/understudy/understudy/driver/drivertest"
	riderclient "github.com/understudy/understudy/rider/client"
)

// procRegions is a dev cluster of three region processes (north, east, south, each
// with its own NATS node; north's successor is east), played from outside as riders,
// drivers and an operator would.
type procRegions struct {
	tb         testing.TB
	dir        string // the dev cluster's directory (each region's data in dir/<region>)
	deployment string // the deployment file
	p          *devClusterProc
	regions    map[string]devRegion
	keys       *jwtauth.Keys
	hc         *http.Client
}

const procSecret = "a-secret-the-dev-cluster-shares"

func startProcRegions(tb testing.TB) *procRegions {
	tb.Helper()
	tb.Setenv("UNDERSTUDY_SECRET", procSecret)
	dir := tb.TempDir()
	if d := os.Getenv("UNDERSTUDY_TEST_CLUSTER_DIR"); d != "" {
		var err error // to read the regions' logs after a run
		if dir, err = os.MkdirTemp(d, "cluster-"); err != nil {
			tb.Fatal(err)
		}
	}
	deployment := testDeployment(tb)
	p := startDevCluster(tb, "--deployment", deployment, "--dir", dir)
	w := &procRegions{tb: tb, p: p, dir: dir, deployment: deployment, regions: p.regionsNow(), keys: &jwtauth.Keys{Secret: []byte(procSecret)},
		hc: &http.Client{Timeout: 5 * time.Second}}
	tb.Cleanup(w.hc.CloseIdleConnections)
	for _, name := range []string{"north", "east", "south"} {
		for _, at := range []string{"north", "east", "south"} {
			w.awaitServing(at, "area-"+name, name)
		}
	}
	return w
}

func (w *procRegions) token(sub string, role dispatch.Role) string {
	w.tb.Helper()
	tok, err := w.keys.Sign(dispatch.Identity{Subject: sub, Role: role}, time.Hour)
	if err != nil {
		w.tb.Fatal(err)
	}
	return tok
}

// center is a point near the middle of area-<region>'s cell, offset a little.
func (w *procRegions) center(region string, northM float64) dispatch.Point {
	cells := map[string]string{"north": "8630e1c37ffffff", "east": "8630e1d87ffffff", "south": "8630e1ca7ffffff"}
	ll := h3.Cell(h3.IndexFromString(cells[region])).LatLng()
	return offset(dispatch.Point{Lat: ll.Lat, Lng: ll.Lng}, northM, 0)
}

// served returns who region at says serves area, and under which epoch.
func (w *procRegions) served(at, area string) (string, uint64, error) {
	var v dispatch.RegionsView
	resp, err := w.hc.Get(w.regions[at].url + "/v1/regions")
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return "", 0, err
	}
	for _, a := range v.Areas {
		if a.Name == area {
			if a.ServedBy == nil || a.Epoch == nil {
				return "", 0, nil
			}
			return *a.ServedBy, *a.Epoch, nil
		}
	}
	return "", 0, fmt.Errorf("no area %s in %s's view", area, at)
}

// awaitServing waits until region at says by serves area; it returns the epoch.
func (w *procRegions) awaitServing(at, area, by string) uint64 {
	w.tb.Helper()
	var epoch uint64
	dispatchtest.Eventually(w.tb, func() error {
		got, e, err := w.served(at, area)
		if err != nil {
			return err
		}
		if got != by {
			return fmt.Errorf("%s says %s is served by %q, want %s", at, area, got, by)
		}
		epoch = e
		return nil
	})
	return epoch
}

// call makes an HTTP call to region at with token and returns the status and body.
func (w *procRegions) call(at, method, path, token string, body any) (int, []byte) {
	w.tb.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, w.regions[at].url+path, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.hc.Do(req)
	if err != nil {
		w.tb.Fatalf("%s %s at %s: %v", method, path, at, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// request asks region at for a ride from pickup, as rider u-1, and returns its id.
func (w *procRegions) request(at string, pickup dispatch.Point) string {
	w.tb.Helper()
	code, b := w.call(at, "POST", "/v1/rides", w.token("u-1", dispatch.RoleRider), map[string]any{"pickup": pickup, "dropoff": seoulStation})
	if code != 201 {
		w.tb.Fatalf("ride request at %s = %d %s", at, code, b)
	}
	var r struct{ ID string }
	_ = json.Unmarshal(b, &r)
	return r.ID
}

// requestKeyed asks region at for a ride from pickup as rider u-1 with an
// Idempotency-Key, and returns the status, the ride's id and whether it was replayed.
func (w *procRegions) requestKeyed(at string, pickup dispatch.Point, key string) (int, string, bool) {
	w.tb.Helper()
	b, _ := json.Marshal(map[string]any{"pickup": pickup, "dropoff": seoulStation})
	req, _ := http.NewRequest("POST", w.regions[at].url+"/v1/rides", bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+w.token("u-1", dispatch.RoleRider))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := w.hc.Do(req)
	if err != nil {
		w.tb.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct{ ID string }
	_ = json.NewDecoder(resp.Body).Decode(&r)
	return resp.StatusCode, r.ID, resp.Header.Get("Idempotent-Replayed") == "true"
}

// ride reads ride id at region at, as an admin.
func (w *procRegions) ride(at, id string) (int, dispatch.RideView) {
	w.tb.Helper()
	code, b := w.call(at, "GET", "/v1/rides/"+id, w.token("ops", dispatch.RoleAdmin), nil)
	var r dispatch.RideView
	_ = json.Unmarshal(b, &r)
	return code, r
}

// dial connects driver id to region at and returns it with its welcome.
func (w *procRegions) dial(at, id string) (*client.Client, driver.Message) {
	w.tb.Helper()
	ws := "ws" + strings.TrimPrefix(w.regions[at].url, "http") + driver.Path
	var c *client.Client
	dispatchtest.Eventually(w.tb, func() error {
		var err error
		c, err = client.Dialer{}.Dial(context.Background(), ws, w.token(id, dispatch.RoleDriver))
		return err
	})
	w.tb.Cleanup(func() { _ = c.Close() })
	return c, drivertest.Next(w.tb, c, driver.TypeWelcome)
}

// online dials driver id at region at and makes it available at p.
func (w *procRegions) online(at, id string, p dispatch.Point) *client.Client {
	w.tb.Helper()
	c, _ := w.dial(at, id)
	ctx := context.Background()
	if err := c.Location(ctx, p); err != nil {
		w.tb.Fatal(err)
	}
	if err := c.Available(ctx); err != nil {
		w.tb.Fatal(err)
	}
	drivertest.Next(w.tb, c, driver.TypeAck)
	return c
}

// steps takes driver c's ride through the given trip steps, each answered by a ride frame.
func steps(tb testing.TB, c *client.Client, rideID string, names ...string) {
	tb.Helper()
	ctx := context.Background()
	for _, s := range names {
		var err error
		switch s {
		case "arrived":
			err = c.Arrived(ctx, rideID)
		case "start":
			err = c.Start(ctx, rideID)
		case "complete":
			err = c.Complete(ctx, rideID)
		}
		if err != nil {
			tb.Fatalf("%s for ride %s: %v", s, rideID, err)
		}
		if m := drivertest.Next(tb, c, driver.TypeRide); m.Ride == nil || m.Ride.ID != rideID {
			tb.Fatalf("%s for ride %s answered %s", s, rideID, m.Raw)
		}
	}
}

// accept waits for c's offer of ride id and accepts it.
func accept(tb testing.TB, c *client.Client, rideID string) {
	tb.Helper()
	o := drivertest.Next(tb, c, driver.TypeOffer)
	if o.RideID != rideID {
		tb.Fatalf("offered %s, want %s", o.RideID, rideID)
	}
	if err := c.Accept(context.Background(), o.OfferID); err != nil {
		tb.Fatal(err)
	}
	drivertest.Next(tb, c, driver.TypeAssigned)
}

// history reads every ride change the log holds for area, in log order, from
// region at's NATS node.
func (w *procRegions) history(at, area string) []dispatch.Ride {
	w.tb.Helper()
	js, done := w.jetStream(at)
	defer done()
	var out []dispatch.Ride
	// Each attempt bounded: a request that reaches the cluster between two leaders
	// is never answered (the cluster has just lost, or regained, a region).
	dispatchtest.Eventually(w.tb, func() error {
		out = nil
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := js.Stream(ctx, natslog.RideStream)
		if err != nil {
			return err
		}
		cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"understudy.areas." + area + ".*"}})
		if err != nil {
			return err
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return err
		}
		for pending := info.NumPending; pending > 0; {
			batch, err := cons.Fetch(int(min(pending, 256)), jetstream.FetchMaxWait(2*time.Second))
			if err != nil {
				return err
			}
			n := 0
			for m := range batch.Messages() {
				var r dispatch.Ride
				if err := json.Unmarshal(m.Data(), &r); err != nil {
					w.tb.Fatal(err)
				}
				out = append(out, r)
				n++
			}
			if n == 0 {
				return fmt.Errorf("reading the log of %s: %d changes pending, none came (%v)", area, pending, batch.Error())
			}
			pending -= uint64(n)
		}
		return nil
	})
	return out
}

// jetStream connects to region at's NATS node, without reconnecting; done closes it.
func (w *procRegions) jetStream(at string) (js jetstream.JetStream, done func()) {
	w.tb.Helper()
	nc, err := natslog.Connect(w.regions[at].nats, nats.MaxReconnects(0))
	if err != nil {
		w.tb.Fatal(err)
	}
	js, _ = jetstream.New(nc)
	return js, nc.Close
}

// awaitLeader waits until stream has a leader among the regions still running, as
// region at's NATS node reports it: after a region is lost, the streams it led elect
// new leaders (4 to 9 s), and writes to them wait for that.
func (w *procRegions) awaitLeader(at, stream string, lost ...string) {
	w.tb.Helper()
	js, done := w.jetStream(at)
	defer done()
	dispatchtest.Eventually(w.tb, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		st, err := js.Stream(ctx, stream)
		if err != nil {
			return err
		}
		c := st.CachedInfo().Cluster
		if c == nil || c.Leader == "" || slices.Contains(lost, c.Leader) {
			return fmt.Errorf("stream %s has no leader among the live regions yet (%+v)", stream, c)
		}
		return nil
	})
}

// checkHistory checks a whole area's log: each ride's versions only grow, a ride
// never has two drivers, and a driver never holds two rides at once.
func checkHistory(tb testing.TB, log []dispatch.Ride) {
	tb.Helper()
	version := map[string]uint64{}
	driverOf := map[string]string{}
	busy := map[string]string{} // driver -> its ride not yet final
	for _, r := range log {
		if r.Version <= version[r.ID] {
			tb.Errorf("ride %s logged at version %d after %d: two writers", r.ID, r.Version, version[r.ID])
		}
		version[r.ID] = r.Version
		if r.DriverID == "" {
			continue
		}
		if d, ok := driverOf[r.ID]; ok && d != r.DriverID {
			tb.Errorf("ride %s held by driver %s and then %s", r.ID, d, r.DriverID)
		}
		driverOf[r.ID] = r.DriverID
		if other, ok := busy[r.DriverID]; ok && other != r.ID {
			tb.Errorf("driver %s holds ride %s while still holding %s", r.DriverID, r.ID, other)
		}
		if r.Status.Final() {
			delete(busy, r.DriverID)
		} else {
			busy[r.DriverID] = r.ID
		}
	}
}

// A whole region (its process and its NATS node) is killed with SIGKILL while it has
// rides in every state in its area. Its successor takes the area once the lease
// lapses, rebuilds its rides from the replicated log, and the trips go on there: the
// drivers reconnect and find their rides, the ride still searching is matched, every
// trip completes and is in the ledger once, and the area's whole log shows no ride or
// driver held twice.
func TestRegionLossIsTakenOverBySuccessor(t *testing.T) {
	w := startProcRegions(t)
	before := w.awaitServing("east", "area-north", "north")

	// At north: one trip in progress, one matched, one arrived, one searching.
	inProgress, matched, arrived := w.online("north", "d-1", w.center("north", 0)), (*client.Client)(nil), (*client.Client)(nil)
	r1 := w.request("north", w.center("north", 50))
	accept(t, inProgress, r1)
	steps(t, inProgress, r1, "arrived", "start")
	matched = w.online("north", "d-2", w.center("north", 100))
	r2 := w.request("north", w.center("north", 150))
	accept(t, matched, r2)
	arrived = w.online("north", "d-3", w.center("north", 200))
	r3 := w.request("north", w.center("north", 250))
	accept(t, arrived, r3)
	steps(t, arrived, r3, "arrived")
	// No driver free: searching. The rider sent a key with it.
	code, r4, _ := w.requestKeyed("north", w.center("north", 300), "k-searching")
	if code != 201 {
		t.Fatalf("keyed ride request at north: %d", code)
	}
	for _, c := range []*client.Client{matched, arrived} {
		_ = c.Close() // these two the test dials again itself
	}
	// The driver mid-trip keeps its Go client, which fails over on its own.
	_ = inProgress.Close()
	ws := "ws" + strings.TrimPrefix(w.regions["north"].url, "http") + driver.Path
	follower, err := client.Dialer{Reconnect: true, MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second}.
		Dial(context.Background(), ws, w.token("d-1", dispatch.RoleDriver))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = follower.Close() })
	drivertest.Next(t, follower, driver.TypeWelcome)
	// So does a rider's Go client, which knows only north.
	rc := riderclient.New(w.regions["north"].url, w.token("u-1", dispatch.RoleRider))
	if _, err := rc.Ride(context.Background(), r2); err != nil {
		t.Fatal(err)
	}

	killed := time.Now()
	if err := syscall.Kill(w.regions["north"].pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	epoch := w.awaitServing("east", "area-north", "east")
	t.Logf("east serves area-north %s after north was killed (epoch %d, was %d)", time.Since(killed).Round(time.Millisecond), epoch, before)
	if epoch <= before {
		t.Errorf("east's epoch %d is not above north's %d", epoch, before)
	}
	w.awaitServing("south", "area-north", "east")

	// The rider retries its request at east with the same key: the same ride.
	// (503 while the keys' bucket elects a leader, if north led it: clients retry.)
	dispatchtest.Eventually(t, func() error {
		code, id, replayed := w.requestKeyed("east", w.center("north", 300), "k-searching")
		if code == 503 {
			return fmt.Errorf("the same keyed request at east: 503")
		}
		if code != 201 || id != r4 || !replayed {
			t.Fatalf("the same keyed request at east after the takeover: %d ride %s replayed %v, want ride %s replayed", code, id, replayed, r4)
		}
		return nil
	})

	// The Go clients find their way to east on their own.
	dispatchtest.Eventually(t, func() error {
		got, err := rc.Ride(context.Background(), r2)
		if err != nil {
			return err
		}
		if got.Status != dispatch.RideMatched || rc.RideURL(r2) != w.regions["east"].url {
			return fmt.Errorf("rider client has ride %s %s at %s, want matched at east", r2, got.Status, rc.RideURL(r2))
		}
		return nil
	})
	// Welcomed at east with its ride, or, if it got there before east took the area
	// over, told of it then.
	for deadline := time.After(dispatchtest.Patience); ; {
		var m driver.Message
		select {
		case m = <-follower.Frames():
		case <-deadline:
			t.Fatalf("d-1's client never heard of its ride %s at %s", r1, follower.URL())
		}
		if (m.Type == driver.TypeWelcome || m.Type == driver.TypeAssigned) && m.Ride != nil && m.Ride.ID == r1 {
			break
		}
	}
	if follower.URL() != "ws"+strings.TrimPrefix(w.regions["east"].url, "http")+driver.Path {
		t.Errorf("d-1's client is at %s, want east", follower.URL())
	}
	_ = follower.Close()

	// The drivers come back at east and find their rides as they left them.
	want := map[string]struct {
		ride   string
		status dispatch.RideStatus
	}{"d-1": {r1, dispatch.RideInProgress}, "d-2": {r2, dispatch.RideMatched}, "d-3": {r3, dispatch.RideArrived}}
	drivers := map[string]*client.Client{}
	for id, wr := range want {
		c, welcome := w.dial("east", id)
		if welcome.Ride == nil || welcome.Ride.ID != wr.ride || welcome.Ride.Status != wr.status {
			t.Fatalf("driver %s welcomed at east with %s, want ride %s %s", id, welcome.Raw, wr.ride, wr.status)
		}
		drivers[id] = c
	}
	// The searching ride is matched at east. The trips complete once the ledger, if
	// north led it, has a leader again.
	w.awaitLeader("east", natslog.LedgerStream, "north")
	fresh := w.online("east", "d-4", w.center("north", 350))
	accept(t, fresh, r4)
	steps(t, drivers["d-1"], r1, "complete")
	steps(t, drivers["d-2"], r2, "arrived", "start", "complete")
	steps(t, drivers["d-3"], r3, "start", "complete")
	steps(t, fresh, r4, "arrived", "start", "complete")

	for _, id := range []string{r1, r2, r3, r4} {
		if code, r := w.ride("east", id); code != 200 || r.Status != dispatch.RideCompleted {
			t.Errorf("ride %s at east: %d %s, want completed", id, code, r.Status)
		}
	}
	// Each trip is in the ledger once.
	code, b := w.call("east", "GET", "/v1/admin/ledger", w.token("ops", dispatch.RoleAdmin), nil)
	if code != 200 {
		t.Fatalf("ledger at east: %d %s", code, b)
	}
	count := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var e struct {
			RideID string `json:"ride_id"`
		}
		_ = json.Unmarshal([]byte(line), &e)
		count[e.RideID]++
	}
	for _, id := range []string{r1, r2, r3, r4} {
		if count[id] != 1 {
			t.Errorf("ride %s is in the ledger %d times, want once", id, count[id])
		}
	}
	log := w.history("east", "area-north")
	checkHistory(t, log)
	ids := map[string]bool{}
	for _, r := range log {
		ids[r.ID] = true
	}
	var got []string
	for id := range ids {
		got = append(got, id)
	}
	sort.Strings(got)
	if len(got) != 4 {
		t.Errorf("area-north's log holds rides %v, want the 4 requested", got)
	}

	// North comes back on its data: it rejoins, serves nothing it was not given (its
	// home area is east's now), and takes the area back when an admin moves it.
	addr := strings.TrimPrefix(w.regions["north"].url, "http://")
	startProc(t, "--deployment", w.deployment, "--region", "north", "--addr", addr, "--data-dir", filepath.Join(w.dir, "north"))
	w.awaitServing("north", "area-north", "east")
	code, b = w.call("north", "POST", "/v1/rides", w.token("u-1", dispatch.RoleRider), map[string]any{"pickup": w.center("north", 0), "dropoff": seoulStation})
	if code != 421 || !strings.Contains(string(b), `"region":"east"`) {
		t.Errorf("ride request in area-north at the recovered north: %d %s, want 421 to east", code, b)
	}
	var moved MoveResult
	dispatchtest.Eventually(t, func() error { // east must see north up (its probes) first
		code, b := w.call("east", "POST", "/v1/admin/areas/area-north/move", w.token("ops", dispatch.RoleAdmin), map[string]string{"to": "north"})
		if code != 200 {
			return fmt.Errorf("move area-north back to north: %d %s", code, b)
		}
		return json.Unmarshal(b, &moved)
	})
	if moved.Epoch <= epoch {
		t.Errorf("hand-back epoch %d, want above east's %d", moved.Epoch, epoch)
	}
	if by, e, _ := w.served("north", "area-north"); by != "north" || e != moved.Epoch {
		t.Errorf("north's view after the move answered: %s at %d, want north at %d", by, e, moved.Epoch)
	}
	w.awaitServing("east", "area-north", "north")
	if id := w.request("north", w.center("north", 0)); id == "" {
		t.Error("north refuses rides in its area after the hand-back")
	}
	if code, r := w.ride("north", r1); code != 200 || r.Status != dispatch.RideCompleted {
		t.Errorf("ride %s at north after the hand-back: %d %s, want completed (adopted from the log)", r1, code, r.Status)
	}
}

// BenchmarkTakeover measures, over b.N kills (each on a fresh dev cluster), how long
// the successor takes after north is killed with SIGKILL to serve north's area, to
// send the first offer there (a ride left searching, to a driver already at east),
// and to resume the trips in flight (the last of two drivers mid-trip welcomed at
// east with its ride). It reports the min, median and max of each. Run it with
//
//	go test ./cmd/understudy -run '^$' -bench Takeover -benchtime 10x
func BenchmarkTakeover(b *testing.B) {
	var serve, offer, resume []time.Duration
	for i := 0; i < b.N; i++ {
		s, o, r := measureTakeover(b)
		serve, offer, resume = append(serve, s), append(offer, o), append(resume, r)
		b.Logf("kill %d: serving after %s, first offer after %s, trips resumed after %s", i+1, s, o, r)
	}
	for _, m := range []struct {
		name string
		d    []time.Duration
	}{{"serve", serve}, {"offer", offer}, {"resume", resume}} {
		slices.Sort(m.d)
		b.ReportMetric(m.d[0].Seconds(), m.name+"-min-s")
		b.ReportMetric(m.d[len(m.d)/2].Seconds(), m.name+"-median-s")
		b.ReportMetric(m.d[len(m.d)-1].Seconds(), m.name+"-max-s")
	}
}

func measureTakeover(b *testing.B) (serve, offer, resume time.Duration) {
	b.StopTimer()
	w := startProcRegions(b)
	var trips []*client.Client
	var rides []string
	for i, id := range []string{"d-1", "d-2"} {
		c := w.online("north", id, w.center("north", float64(100*i)))
		r := w.request("north", w.center("north", float64(100*i+50)))
		accept(b, c, r)
		steps(b, c, r, "arrived", "start")
		trips, rides = append(trips, c), append(rides, r)
	}
	searching := w.request("north", w.center("north", 400))
	// A driver at east, in north's area: east's once it serves the area.
	waiting, _ := w.dial("east", "d-9")
	ctx := context.Background()
	if err := waiting.Location(ctx, w.center("north", 450)); err != nil {
		b.Fatal(err)
	}
	if err := waiting.Available(ctx); err != nil {
		b.Fatal(err)
	}
	drivertest.Next(b, waiting, driver.TypeAck)
	for _, c := range trips {
		_ = c.Close()
	}
	b.StartTimer()
	killed := time.Now()
	if err := syscall.Kill(w.regions["north"].pid, syscall.SIGKILL); err != nil {
		b.Fatal(err)
	}
	done := make(chan time.Duration, 2)
	go func() { // the first offer
		for m := range waiting.Frames() {
			if m.Type == driver.TypeOffer && m.RideID == searching {
				done <- time.Since(killed)
				return
			}
		}
	}()
	go func() { // the trips in flight, resumed
		ws := "ws" + strings.TrimPrefix(w.regions["east"].url, "http") + driver.Path
		for i, id := range []string{"d-1", "d-2"} {
			for {
				c, err := client.Dialer{}.Dial(context.Background(), ws, w.token(id, dispatch.RoleDriver))
				if err == nil {
					m, ok := <-c.Frames()
					_ = c.Close()
					if ok && m.Type == driver.TypeWelcome && m.Ride != nil && m.Ride.ID == rides[i] {
						break
					}
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		done <- -time.Since(killed) // negative: tells the two apart
	}()
	w.awaitServing("east", "area-north", "east")
	serve = time.Since(killed)
	for range 2 {
		select {
		case d := <-done:
			if d < 0 {
				resume = -d
			} else {
				offer = d
			}
		case <-time.After(dispatchtest.Patience):
			b.Fatalf("no offer or no resumed trips within %s of the kill", dispatchtest.Patience)
		}
	}
	b.StopTimer()
	w.p.stop(b)
	return serve, offer, resume
}

// metric returns the value of a counter or gauge without labels from region at's
// /metrics, 0 when absent.
func (w *procRegions) metric(at, name string) float64 {
	w.tb.Helper()
	resp, err := w.hc.Get(w.regions[at].url + "/metrics")
	if err != nil {
		w.tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return 0
}

// A region paused (SIGSTOP) past its lease wakes up (SIGCONT) to a driver's trip
// step and a rider's cancel, sent to it by clients that still believe it serves
// them: the ride log refuses the step, because the successor wrote the area's fence
// when it took over, and the cancel is refused by the region's own clock. The refusal is counted, the clients are sent to the
// successor, and nothing the paused region wrote after losing its lease is in the
// log or at the successor.
func TestPausedRegionIsFencedByTheLog(t *testing.T) {
	w := startProcRegions(t)
	d1 := w.online("north", "d-1", w.center("north", 0))
	r1 := w.request("north", w.center("north", 50))
	accept(t, d1, r1)
	steps(t, d1, r1, "arrived")

	north := w.regions["north"].pid
	if err := syscall.Kill(north, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(north, syscall.SIGCONT) })
	w.awaitServing("east", "area-north", "east")
	dispatchtest.Eventually(t, func() error {
		if code, r := w.ride("east", r1); code != 200 || r.Status != dispatch.RideArrived {
			return fmt.Errorf("ride %s at east: %d %s, want arrived", r1, code, r.Status)
		}
		return nil
	})
	// The driver's app, still connected to north, starts the trip there; north reads
	// the frame as it wakes, before anything tells it it has lost the area, and its
	// own clock is not asked (a trip step assigns nothing): the write reaches the log.
	if err := d1.Start(context.Background(), r1); err != nil {
		t.Fatalf("send start to north: %v", err)
	}
	if err := syscall.Kill(north, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// A rider's cancel at north is refused before any write: north no longer serves
	// the ride's area by its clock.
	code, b := w.call("north", "POST", "/v1/rides/"+r1+"/cancel", w.token("u-1", dispatch.RoleRider), nil)
	// North says so: 421 to east once it has read the bucket, 503 no_lease before.
	if code != 421 && !(code == 503 && strings.Contains(string(b), `"no_lease"`)) {
		t.Errorf("cancel at north after it lost the area: %d %s, want 421 to east or 503 no_lease", code, b)
	}
	var got []string
	var moved bool // north heard of the takeover before it read the start
	for m := range d1.Frames() {
		got = append(got, m.Type+" "+string(m.Code))
		if m.Type == driver.TypeReconnect || m.Type == driver.TypeRide {
			moved = m.Type == driver.TypeReconnect && strings.Contains(string(m.Raw), `"area_moved"`)
			break
		}
	}
	if len(got) == 0 || !strings.HasPrefix(got[len(got)-1], driver.TypeReconnect) {
		t.Errorf("north answered the start with %v, want a reconnect to east", got)
	}
	// Which north does first as it wakes, read the frame or the bucket, is up to
	// the scheduler. When it reads the frame first, the log must have refused the
	// write; when the bucket, the driver was sent on before any write.
	if n := w.metric("north", "understudy_dispatch_fenced_writes_total"); n < 1 && !moved {
		t.Fatalf("north counted %v fenced writes and sent no area_moved first: the log did not refuse its stale write (or the test did not make one)", n)
	} else if n < 1 {
		t.Logf("north saw the bucket before the start frame (reconnect area_moved): no write reached the log")
	}
	// Nothing of it anywhere: the successor has the ride as it was, and so has the log.
	if code, r := w.ride("east", r1); code != 200 || r.Status != dispatch.RideArrived {
		t.Errorf("ride %s at east after north's stale start: %d %s, want arrived", r1, code, r.Status)
	}
	for _, r := range w.history("east", "area-north") {
		if r.ID == r1 && (r.Status != dispatch.RideMatched && r.Status != dispatch.RideArrived && r.Status != dispatch.RideSearching || !r.CancelFeeAt.IsZero()) {
			t.Errorf("the log holds north's refused write of %s: %s at version %d", r1, r.Status, r.Version)
		}
	}
	if code, _ := w.ride("north", r1); code != 421 {
		t.Errorf("ride %s at north after it lost the area: %d, want 421 to east", r1, code)
	}
	// The driver goes on at east (once the ledger has a leader, if north's pause
	// cost it its own).
	w.awaitLeader("east", natslog.LedgerStream)
	c, welcome := w.dial("east", "d-1")
	if welcome.Ride == nil || welcome.Ride.ID != r1 || welcome.Ride.Status != dispatch.RideArrived {
		t.Fatalf("d-1 welcomed at east with %s, want ride %s arrived", welcome.Raw, r1)
	}
	steps(t, c, r1, "start", "complete")
}

// Two regions of three are lost at once (SIGKILL). The survivor's NATS node has no
// quorum left: it can renew no lease, so once its lease runs out it serves nothing,
// not even its own area (503 no_lease), and offers nothing to a driver waiting there,
// rather than risk a double assignment with a region it cannot see.
func TestTwoRegionsLostLeaveTheSurvivorServingNothing(t *testing.T) {
	w := startProcRegions(t)
	ride := w.request("north", w.center("north", 50)) // searching: no driver yet
	for _, name := range []string{"east", "south"} {
		if err := syscall.Kill(w.regions[name].pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	rider := w.token("u-2", dispatch.RoleRider)
	body := `{"pickup":{"lat":` + fmt.Sprint(w.center("north", 0).Lat) + `,"lng":` + fmt.Sprint(w.center("north", 0).Lng) + `},"dropoff":{"lat":37.5547,"lng":126.9707}}`
	hc := &http.Client{Timeout: 20 * time.Second} // a write in flight as the quorum goes waits for the log's bound
	defer hc.CloseIdleConnections()
	dispatchtest.Eventually(t, func() error {
		req, _ := http.NewRequest("POST", w.regions["north"].url+"/v1/rides", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+rider)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if code := resp.StatusCode; code != 503 || !strings.Contains(string(b), `"no_lease"`) {
			return fmt.Errorf("ride request at north with two regions lost: %d %s, want 503 no_lease", code, b)
		}
		return nil
	})
	if by, _, err := w.served("north", "area-north"); err != nil || by != "" {
		t.Errorf("north says area-north is served by %q (%v), want nobody", by, err)
	}
	// A driver who comes online there is offered nothing, for twice the lease time.
	d := w.online("north", "d-1", w.center("north", 0))
	quiet := time.After(6 * time.Second)
	for {
		select {
		case m := <-d.Frames():
			if m.Type == driver.TypeOffer {
				t.Fatalf("north offered ride %s with no lease (two regions lost)", m.RideID)
			}
			continue
		case <-quiet:
		}
		break
	}
	if code, _ := w.ride("north", ride); code != 503 {
		t.Errorf("ride %s at north with no lease: %d, want 503 no_lease", ride, code)
	}
}
