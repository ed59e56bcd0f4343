package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/uber/h3-go/v4"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
	"github.com/understudy/understudy/dispatch/natslog"
	"github.com/understudy/understudy/driver"
	"github.com/understudy/understudy/driver/client"
	"github.com/understudy/understudy/driver/drivertest"
)

// Points of the test deployment: each of the three regions' areas is the res-6 cell
// of its point; nowhere is in no area.
var (
	atNorth   = dispatch.Point{Lat: 37.5665, Lng: 126.978} // Seoul city hall: the trips of the e2e tests
	atSouth   = dispatch.Point{Lat: 37.4979, Lng: 127.0276}
	atEast    = dispatch.Point{Lat: 35.1796, Lng: 129.0756}
	atNowhere = dispatch.Point{Lat: 36.35, Lng: 127.38}
)

func cellOf(p dispatch.Point) string { return h3.LatLngToCell(h3.NewLatLng(p.Lat, p.Lng), 6).String() }

// writeDeployment writes a deployment file of three regions north, east and south at
// the given addresses (host:port), each with one area around its point, and returns
// its path.
func writeDeployment(tb testing.TB, north, east, south string) string {
	tb.Helper()
	body := fmt.Sprintf(`{
  "regions": [
    {"name": "north", "url": "http://%s", "successor": "east"},
    {"name": "east",  "url": "http://%s", "successor": "south"},
    {"name": "south", "url": "http://%s", "successor": "north"}
  ],
  "areas": [
    {"name": "jongno",  "region": "north", "cells": [%q]},
    {"name": "gangnam", "region": "south", "cells": [%q]},
    {"name": "busan",   "region": "east",  "cells": [%q]}
  ],
  "lease_ttl": "3s"
}`, north, east, south, cellOf(atNorth), cellOf(atSouth), cellOf(atEast))
	path := filepath.Join(tb.TempDir(), "deployment.json")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// The real binary refuses to start on a bad deployment, and says which entry is bad.
func TestServeRefusesBadDeployment(t *testing.T) {
	good := writeDeployment(t, "127.0.0.1:9101", "127.0.0.1:9102", "127.0.0.1:9103")
	b, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	edited := func(old, new string) string {
		path := filepath.Join(t.TempDir(), "deployment.json")
		if err := os.WriteFile(path, []byte(strings.Replace(string(b), old, new, 1)), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown successor", []string{"--deployment", edited(`"successor": "east"`, `"successor": "west"`), "--region", "north"},
			`regions[0] "north": successor "west" is not a region of this deployment`},
		{"region without url", []string{"--deployment", edited(`"url": "http://127.0.0.1:9102", `, ""), "--region", "north"},
			`regions[1] "east": no url`},
		{"overlapping areas", []string{"--deployment", edited(fmt.Sprintf("[%q]}", cellOf(atSouth)),
			fmt.Sprintf("[%q]}", h3.LatLngToCell(h3.NewLatLng(atNorth.Lat, atNorth.Lng), 8).String())), "--region", "north"},
			`areas[1] "gangnam": cell ` + h3.LatLngToCell(h3.NewLatLng(atNorth.Lat, atNorth.Lng), 8).String() + ` lies inside cell ` + cellOf(atNorth) + ` of area "jongno"`},
		{"region not in the file", []string{"--deployment", good, "--region", "west"},
			`region "west" is not a region of deployment ` + good + ` (north, east, south)`},
		{"no such file", []string{"--deployment", good + ".missing", "--region", "north"}, "no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), dispatchtest.Patience)
			defer cancel()
			args := append([]string{"serve", "--addr", "127.0.0.1:0", "--data-dir", t.TempDir()}, tc.args...)
			out, err := exec.CommandContext(ctx, mustBuild(t), args...).CombinedOutput()
			if err == nil {
				t.Fatalf("serve started with a bad deployment:\n%s", out)
			}
			if _, exited := err.(*exec.ExitError); !exited || !strings.Contains(string(out), tc.want) {
				t.Fatalf("serve: %v, output does not say %q:\n%s", err, tc.want, out)
			}
		})
	}
}

// regionalDeployment is north and south of a three-region deployment, in process on
// one NATS server of their own (as an external cluster given with --nats), each with
// its own area's lease; east, down from the start, never took its area busan, and
// south, its successor, has it (see awaitServed).
type regionalDeployment struct {
	north, south *server
	eastAddr     string // nobody listens there: east is down
}

func mustRegions(tb testing.TB, args ...string) regionalDeployment {
	tb.Helper()
	d := startRegions(tb, args...)
	d.awaitLeases(tb)
	return d
}

// awaitLeases waits until both regions see jongno served by north, and gangnam and
// busan by south.
func (d regionalDeployment) awaitLeases(tb testing.TB) {
	tb.Helper()
	awaitServed(tb, d.north, map[string]string{"jongno": "north", "gangnam": "south", "busan": "south"})
	awaitServed(tb, d.south, map[string]string{"jongno": "north", "gangnam": "south", "busan": "south"})
}

// regionsOnOneNATS picks the three regions' addresses, writes their deployment file
// and starts the one NATS server they share; common is the serve flags every region
// takes (--deployment, --nats).
func regionsOnOneNATS(tb testing.TB) (north, east, south string, common []string) {
	tb.Helper()
	north, east, south = freeAddr(tb), freeAddr(tb), freeAddr(tb)
	file := writeDeployment(tb, north, east, south)
	emb, err := natslog.StartEmbedded(tb.TempDir(), "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(emb.Close) // after the servers, which are stopped first
	return north, east, south, []string{"--deployment", file, "--nats", emb.URL()}
}

// serveRegion starts region name in process on addr with the common flags and args.
func serveRegion(tb testing.TB, name, addr string, common, args []string) *server {
	tb.Helper()
	return mustServe(tb, append(append([]string{"--addr", addr, "--region", name}, common...), args...)...)
}

// startRegions is mustRegions without waiting for the leases.
func startRegions(tb testing.TB, args ...string) regionalDeployment {
	tb.Helper()
	north, east, south, common := regionsOnOneNATS(tb)
	return regionalDeployment{eastAddr: east,
		north: serveRegion(tb, "north", north, common, args), south: serveRegion(tb, "south", south, common, args)}
}

// awaitServed waits until s sees each area of want served by its region, and that
// region sees so too (it serves it: lease held, fenced and adopted).
func awaitServed(tb testing.TB, s *server, want map[string]string) {
	tb.Helper()
	dispatchtest.Eventually(tb, func() error {
		for area, region := range want {
			by, epoch, _ := s.leases.ServedBy(area)
			if by != region || epoch == 0 {
				return fmt.Errorf("%s sees area %s served by %q at epoch %d, want %s", s.cfg.Region, area, by, epoch, region)
			}
		}
		return nil
	})
}

func TestRegionsView(t *testing.T) {
	d := mustRegions(t, "--match-interval", "0")
	type view struct {
		Regions []struct {
			Name, URL string
			Up        *bool
		}
		Areas []struct {
			Name, Home string
			ServedBy   *string `json:"served_by"`
			Epoch      *uint64
		}
	}
	hc := openAPIClient(t)
	t.Cleanup(hc.CloseIdleConnections)
	regions := func(s *server) (view, error) {
		var v view
		resp, err := hc.Get("http://" + s.Addr() + "/v1/regions")
		if err != nil {
			return v, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			return v, fmt.Errorf("GET /v1/regions = %d", resp.StatusCode)
		}
		return v, json.NewDecoder(resp.Body).Decode(&v)
	}
	up := func(b *bool) string {
		if b == nil {
			return "unknown"
		}
		return fmt.Sprint(*b)
	}
	for _, s := range []*server{d.north, d.south} {
		dispatchtest.Eventually(t, func() error {
			v, err := regions(s)
			if err != nil {
				return err
			}
			var got []string
			for _, r := range v.Regions {
				got = append(got, r.Name+" "+strings.TrimPrefix(r.URL, "http://")+" "+up(r.Up))
			}
			want := []string{"north " + d.north.Addr() + " true", "east " + d.eastAddr + " false", "south " + d.south.Addr() + " true"}
			if strings.Join(got, ", ") != strings.Join(want, ", ") {
				return fmt.Errorf("%s's regions: %v, want %v", s.cfg.Region, got, want)
			}
			got = nil
			for _, a := range v.Areas {
				epoch := "null"
				if a.Epoch != nil {
					epoch = fmt.Sprint(*a.Epoch)
				}
				got = append(got, fmt.Sprintf("%s home %s served by %s epoch %s", a.Name, a.Home, *a.ServedBy, epoch))
			}
			// East never came up: south, its successor, serves its area. Each
			// lease's epoch is the same seen from either region.
			want = nil
			for _, a := range []struct{ name, home, by string }{{"jongno", "north", "north"}, {"gangnam", "south", "south"}, {"busan", "east", "south"}} {
				_, epoch, _ := d.north.leases.ServedBy(a.name)
				want = append(want, fmt.Sprintf("%s home %s served by %s epoch %d", a.name, a.home, a.by, epoch))
			}
			if strings.Join(got, ", ") != strings.Join(want, ", ") {
				return fmt.Errorf("%s's areas: %v, want %v", s.cfg.Region, got, want)
			}
			return nil
		})
	}
}

// problemOf reads a problem+json answer.
type problemBody struct {
	Status       int
	Code, Region string
	URL          string
}

func TestRoutingAnswers421(t *testing.T) {
	d := mustRegions(t, "--match-interval", "0")
	hc := riderHTTP(t, d.north)
	tok := mustToken(t, d.north, "u-1", dispatch.RoleRider)
	post := func(path string, pickup dispatch.Point) (int, problemBody) {
		t.Helper()
		body := fmt.Sprintf(`{"pickup":{"lat":%v,"lng":%v},"dropoff":{"lat":37.5512,"lng":126.9882}}`, pickup.Lat, pickup.Lng)
		req, _ := http.NewRequest("POST", "http://"+d.north.Addr()+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var p problemBody
		_ = json.Unmarshal(b, &p)
		return resp.StatusCode, p
	}
	for _, path := range []string{"/v1/rides", "/v1/estimates"} {
		if code, p := post(path, atSouth); code != 421 || p.Code != "wrong_region" || p.Region != "south" || p.URL != "http://"+d.south.Addr() {
			t.Errorf("%s in south's area on north = %d %+v, want 421 wrong_region to south at %s", path, code, p, d.south.Addr())
		}
		if code, p := post(path, atEast); code != 421 || p.Code != "wrong_region" || p.Region != "south" || p.URL != "http://"+d.south.Addr() {
			t.Errorf("%s in east's area on north = %d %+v, want 421 wrong_region to south (east is down: its successor serves its area)", path, code, p)
		}
		if code, p := post(path, atNowhere); code != 421 || p.Code != "outside_service_area" || p.Region != "" {
			t.Errorf("%s in no area = %d %+v, want 421 outside_service_area", path, code, p)
		}
		if code, p := post(path, atNorth); code/100 != 2 {
			t.Errorf("%s in north's own area = %d %+v, want 2xx", path, code, p)
		}
	}
	// South serves the pickup north sent it.
	if _, err := d.south.engine.Riders().RequestRide(riderCtx(t), "u-1", atSouth, atNorth); err != nil {
		t.Errorf("south refuses a ride in its own area: %v", err)
	}
}

// locate sends a location frame with ref and returns the next frame that answers it
// (its ack or a reconnect), or how the socket ended.
func (d *rawDriver) locate(tb testing.TB, p dispatch.Point, ref string) (driver.Message, error) {
	tb.Helper()
	d.write(tb, fmt.Sprintf(`{"type":"location","lat":%v,"lng":%v,"ref":%q}`, p.Lat, p.Lng, ref))
	for m := range d.frames {
		if (m.Type == driver.TypeAck && m.Ref == ref) || m.Type == driver.TypeReconnect {
			return m, nil
		}
	}
	return driver.Message{}, d.end
}

func TestDriverInAnotherRegionsAreaGetsReconnect(t *testing.T) {
	d := mustRegions(t, "--match-interval", "0")
	drv := mustRawDial(t, d.north, "d-1")
	n := 0
	expectAck := func(p dispatch.Point, what string) {
		t.Helper()
		n++
		m, err := drv.locate(t, p, fmt.Sprint("l", n))
		if err != nil || m.Type != driver.TypeAck {
			t.Fatalf("%s: %s %v, want its ack", what, m.Raw, err)
		}
	}
	// On the border: in and out of south's area, never three in a row there.
	for range 3 {
		expectAck(atNorth, "at home")
		expectAck(atSouth, "first location across the border")
		expectAck(atSouth, "second location across the border")
	}
	if st := riderDriverState(t, d.north, "d-1"); st.Location == nil || *st.Location != atSouth {
		t.Errorf("the locations across the border were not recorded: %+v", st.Location)
	}
	// Third in a row: sent to south.
	n++
	m, err := drv.locate(t, atSouth, fmt.Sprint("l", n))
	if err != nil || m.Type != driver.TypeReconnect {
		t.Fatalf("third location in south's area: %s %v, want reconnect", m.Raw, err)
	}
	var rc struct{ Type, Region, URL, Reason string }
	if err := json.Unmarshal(m.Raw, &rc); err != nil || rc.Region != "south" || rc.URL != "http://"+d.south.Addr() || rc.Reason == "" {
		t.Errorf("reconnect frame %s, want region south, url http://%s and a reason", m.Raw, d.south.Addr())
	}
	for range drv.frames {
	}
	if code := closeCode(drv.end); code != driver.CloseReconnect {
		t.Errorf("socket ended with %v (code %d), want close %d", drv.end, code, driver.CloseReconnect)
	}
	// South takes the driver in its area.
	there := mustRawDial(t, d.south, "d-1")
	if m, err := there.locate(t, atSouth, "s1"); err != nil || m.Type != driver.TypeAck {
		t.Fatalf("south: %s %v, want an ack", m.Raw, err)
	}
}

func TestDriverWithARideIsNotBounced(t *testing.T) {
	d := mustRegions(t)
	drv := mustRawDial(t, d.north, "d-1")
	if m, err := drv.locate(t, atNorth, "l0"); err != nil || m.Type != driver.TypeAck {
		t.Fatalf("location: %s %v", m.Raw, err)
	}
	drv.write(t, `{"type":"available","ref":"a"}`)
	ride, err := d.north.engine.Riders().RequestRide(riderCtx(t), "u-1", atNorth, atSouth)
	if err != nil {
		t.Fatal(err)
	}
	offer := riderOfferTo(t, d.north, "d-1", ride.ID)
	drv.write(t, fmt.Sprintf(`{"type":"accept","offer_id":%q}`, offer))
	for m := drv.next(t); m.Type != driver.TypeAssigned; m = drv.next(t) {
	}
	// The trip goes into south's area: the driver stays with north until it ends.
	for i := range 5 {
		if m, err := drv.locate(t, atSouth, fmt.Sprint("t", i)); err != nil || m.Type != driver.TypeAck {
			t.Fatalf("location %d in south's area during the ride: %s %v, want its ack", i, m.Raw, err)
		}
	}
}

// moveArea asks region s to move area to region to, as an admin, and returns the
// status and the answer.
func moveArea(tb testing.TB, s *server, area, to string) (int, MoveResult) {
	tb.Helper()
	req, _ := http.NewRequest("POST", "http://"+s.Addr()+"/v1/admin/areas/"+area+"/move", strings.NewReader(`{"to":"`+to+`"}`))
	req.Header.Set("Authorization", "Bearer "+mustToken(tb, s, "ops", dispatch.RoleAdmin))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var out MoveResult
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// An admin moves busan from south to north while it has a ride matched and one
// searching: south stops serving it, north takes it under a higher epoch and adopts
// both rides; the matched ride's driver is sent to north (reconnect, area_moved) and
// finds its ride there, the searching ride is matched at north, and south answers
// 421 for them. Moved back, the next ride in busan is south's again.
func TestAdminMoveHandsAnAreaOverAndBack(t *testing.T) {
	regionSecret(t)
	d := mustRegions(t, "--match-interval", "0")
	_, before, _ := d.south.leases.ServedBy("busan")
	c, _ := mustDial(t, d.south, "d-1", client.Dialer{})
	send(t, c.Location(ctx(t), atEast))
	send(t, c.Available(ctx(t)))
	drivertest.Next(t, c, driver.TypeAck)
	matched, err := d.south.engine.Riders().RequestRide(riderCtx(t), "u-1", atEast, atNorth)
	if err != nil {
		t.Fatal(err)
	}
	o := drivertest.Next(t, c, driver.TypeOffer)
	send(t, c.Accept(ctx(t), o.OfferID))
	drivertest.Next(t, c, driver.TypeAssigned)
	searching, err := d.south.engine.Riders().RequestRide(riderCtx(t), "u-2", atEast, atNorth)
	if err != nil {
		t.Fatal(err)
	}
	awaitInFlight(t, d.south, "busan", map[dispatch.RideStatus]float64{dispatch.RideMatched: 1, dispatch.RideSearching: 1})

	code, res := moveArea(t, d.south, "busan", "north")
	if code != 200 || res.To != "north" || res.From != "south" || res.Epoch <= before {
		t.Fatalf("move busan to north: %d %+v, want 200 from south to north at an epoch above %d", code, res, before)
	}
	if by, epoch, _ := d.north.leases.ServedBy("busan"); by != "north" || epoch != res.Epoch {
		t.Errorf("north serves busan: %q at %d, want north at %d", by, epoch, res.Epoch)
	}
	rc := drivertest.Next(t, c, driver.TypeReconnect)
	var frame struct{ Region, Reason string }
	_ = json.Unmarshal(rc.Raw, &frame)
	if frame.Region != "north" || frame.Reason != "area_moved" {
		t.Errorf("reconnect frame %s, want to north for area_moved", rc.Raw)
	}
	// The on-call's count of rides in flight moves with the area.
	awaitInFlight(t, d.north, "busan", map[dispatch.RideStatus]float64{dispatch.RideMatched: 1, dispatch.RideSearching: 1})
	awaitInFlight(t, d.south, "busan", map[dispatch.RideStatus]float64{dispatch.RideMatched: 0, dispatch.RideSearching: 0})
	at, w := mustDial(t, d.north, "d-1", client.Dialer{})
	if w.Ride == nil || w.Ride.ID != matched.ID || w.Ride.Status != dispatch.RideMatched {
		t.Fatalf("d-1 welcomed at north with %s, want ride %s matched", w.Raw, matched.ID)
	}
	steps(t, at, matched.ID, "arrived", "start", "complete")
	fresh := mustOnline(t, d.north, "d-2", atEast)
	if o := drivertest.Next(t, fresh, driver.TypeOffer); o.RideID != searching.ID {
		t.Errorf("d-2 at north offered %s, want the searching ride %s", o.RideID, searching.ID)
	}
	if _, err := d.south.engine.Riders().Ride(riderCtx(t), matched.ID); dispatch.ErrorCode(err) != dispatch.ECodeWrongRegion {
		t.Errorf("ride %s at south after the move: %v, want wrong_region", matched.ID, err)
	}
	if _, err := d.south.engine.Riders().RequestRide(riderCtx(t), "u-3", atEast, atNorth); dispatch.ErrorCode(err) != dispatch.ECodeWrongRegion {
		t.Errorf("ride request in busan at south after the move: %v, want wrong_region", err)
	}

	// And back, as an operator would: `understudy areas move`, then `understudy regions`.
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"areas", "move", "busan", "--to", "south", "--url", "http://" + d.north.Addr()}, &out, &errb); err != nil {
		t.Fatalf("understudy areas move busan --to south: %v %s", err, errb.String())
	}
	if want := "area busan moved from north to south, epoch "; !strings.HasPrefix(out.String(), want) {
		t.Errorf("understudy areas move printed %q, want %q...", out.String(), want)
	}
	// The move answers once south serves busan; north, asked here, reads the bucket
	// on its own schedule (a tenth of the lease time).
	dispatchtest.Eventually(t, func() error {
		out.Reset()
		if err := run(context.Background(), []string{"regions", "--url", "http://" + d.north.Addr()}, &out, &errb); err != nil {
			return fmt.Errorf("understudy regions: %v", err)
		}
		_, epoch, _ := d.north.leases.ServedBy("busan")
		if !regexp.MustCompile(`(?m)^busan +east +south +`+fmt.Sprint(epoch)+`$`).MatchString(out.String()) || epoch <= res.Epoch {
			return fmt.Errorf("understudy regions after the hand-back (epoch %d, above %d):\n%s", epoch, res.Epoch, out.String())
		}
		return nil
	})
	if err := run(context.Background(), []string{"areas", "move", "busan", "--to", "east", "--url", "http://" + d.north.Addr()}, &out, &errb); err == nil || !strings.Contains(err.Error(), "409") {
		t.Errorf("areas move to east, which is down: %v, want a 409 refusal", err)
	}
	if _, err := d.south.engine.Riders().RequestRide(riderCtx(t), "u-3", atEast, atNorth); err != nil {
		t.Errorf("ride request in busan at south after the hand-back: %v", err)
	}
}

// awaitInFlight waits for s's understudy_dispatch_rides_in_flight of area to show
// want (by status).
func awaitInFlight(t *testing.T, s *server, area string, want map[dispatch.RideStatus]float64) {
	t.Helper()
	dispatchtest.Eventually(t, func() error {
		_, body := get(t, "http://"+s.Addr()+"/metrics")
		for status, n := range want {
			series := fmt.Sprintf(`understudy_dispatch_rides_in_flight{area=%q,status=%q}`, area, status)
			if got, ok := sample(body, series); !ok || got != n {
				return fmt.Errorf("%s at %s: %v (present %v), want %v", series, s.Addr(), got, ok, n)
			}
		}
		return nil
	})
}
