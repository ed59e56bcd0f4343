package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
	"github.com/understudy/understudy/dispatch/natslog"
	"github.com/understudy/understudy/driver"
)

// authGet GETs path on s with a token for sub and role ("" role: no token), and
// validates the exchange against docs/openapi.yaml.
func authGet(tb testing.TB, s *server, path, sub string, role dispatch.Role) (int, http.Header, string) {
	tb.Helper()
	req, _ := http.NewRequest("GET", "http://"+s.Addr()+path, nil)
	if role != "" {
		tok, err := s.keys.Sign(dispatch.Identity{Subject: sub, Role: role}, time.Hour)
		if err != nil {
			tb.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	hc := openAPIClient(tb)
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func TestPayRoutes(t *testing.T) {
	ctx := context.Background()
	s := mustServe(t)
	t0 := time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)
	for i, e := range []dispatch.LedgerEntry{
		{RideID: "r_1", DriverID: "d-1", CompletedAt: t0, DistanceM: 5000, Fare: dispatch.Money{Amount: 9000, Currency: "KRW"}},
		{RideID: "r_2", DriverID: "d-2", CompletedAt: t0.Add(time.Hour), DistanceM: 3000, Fare: dispatch.Money{Amount: 7000, Currency: "KRW"}},
		{RideID: "r_3", DriverID: "d-1", CompletedAt: t0.Add(2 * time.Hour), DistanceM: 8000, Fare: dispatch.Money{Amount: 15000, Currency: "KRW"}},
	} {
		e.RecordedAt = e.CompletedAt
		if _, err := s.ledger.Record(ctx, e); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
	}

	code, _, body := authGet(t, s, "/v1/driver/trips", "d-1", dispatch.RoleDriver)
	var trips driver.Trips
	if err := json.Unmarshal([]byte(body), &trips); code != 200 || err != nil || len(trips.Trips) != 2 ||
		trips.Trips[0].RideID != "r_1" || trips.Trips[1].Fare.Amount != 15000 {
		t.Fatalf("trips = %d %s", code, body)
	}
	code, _, body = authGet(t, s, "/v1/driver/earnings?since="+t0.Add(time.Minute).Format(time.RFC3339), "d-1", dispatch.RoleDriver)
	var earn dispatch.Earnings
	if err := json.Unmarshal([]byte(body), &earn); code != 200 || err != nil || earn.Trips != 1 ||
		len(earn.Fares) != 1 || earn.Fares[0] != (dispatch.Money{Amount: 15000, Currency: "KRW"}) || earn.DistanceM != 8000 {
		t.Fatalf("earnings = %d %s", code, body)
	}
	code, hdr, body := authGet(t, s, "/v1/admin/ledger", "ops", dispatch.RoleAdmin)
	lines := strings.Split(strings.TrimSpace(body), "\n")
	if code != 200 || hdr.Get("Content-Type") != "application/x-ndjson" || len(lines) != 3 || !strings.Contains(lines[2], `"r_3"`) {
		t.Fatalf("admin ledger = %d %v %s", code, hdr, body)
	}
	if code, _, body := authGet(t, s, "/v1/admin/ledger?since="+t0.Add(3*time.Hour).Format(time.RFC3339), "ops", dispatch.RoleAdmin); code != 200 || body != "" {
		t.Fatalf("empty admin ledger = %d %q", code, body)
	}

	for _, c := range []struct {
		path string
		role dispatch.Role
		code int
		want string
	}{
		{"/v1/driver/trips", "", 401, "unauthorized"},
		{"/v1/driver/trips", dispatch.RoleRider, 403, "forbidden"},
		{"/v1/driver/earnings?since=yesterday", dispatch.RoleDriver, 400, "invalid"},
		{"/v1/admin/ledger", dispatch.RoleDriver, 403, "forbidden"},
		{"/v1/admin/ledger", "", 401, "unauthorized"},
	} {
		code, _, body := authGet(t, s, c.path, "x-1", c.role)
		if code != c.code || !strings.Contains(body, `"code":"`+c.want+`"`) {
			t.Errorf("%s as %q: %d %s, want %d %s", c.path, c.role, code, body, c.code, c.want)
		}
	}
}

// ledgerConsumers is how many consumers the ledger stream has on s's NATS.
func ledgerConsumers(tb testing.TB, s *server) int {
	tb.Helper()
	js, err := jetstream.New(s.nats)
	if err != nil {
		tb.Fatal(err)
	}
	st, err := js.Stream(context.Background(), natslog.LedgerStream)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return info.State.Consumers
}

// Pay reads leave nothing behind on the JetStream server: 5,000 of them from several
// drivers and an admin at once, then every driver's read still works and the ledger
// stream has as many consumers as before (none). Reads used to leave an ephemeral
// consumer alive for 5 minutes each, and after 1,000 every read failed.
func TestPayReadsLeaveNothingBehind(t *testing.T) {
	ctx := context.Background()
	s := mustServe(t, "--rider-rate", "1000000", "--rider-burst", "1000000") // the test is the flood
	const drivers = 10
	t0 := time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)
	for i := range 2 * drivers {
		e := dispatch.LedgerEntry{RideID: fmt.Sprintf("r_%d", i), DriverID: fmt.Sprintf("d-%d", i%drivers),
			CompletedAt: t0.Add(time.Duration(i) * time.Minute), DistanceM: 1000, Fare: dispatch.Money{Amount: 5000, Currency: "KRW"}}
		if _, err := s.ledger.Record(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	baseline := ledgerConsumers(t, s)

	tokens := make([]string, drivers+1)
	for i := range drivers {
		tokens[i] = mustSign(t, s, fmt.Sprintf("d-%d", i), dispatch.RoleDriver)
	}
	tokens[drivers] = mustSign(t, s, "ops", dispatch.RoleAdmin)
	tr := &http.Transport{MaxIdleConnsPerHost: 32}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	read := func(i int) (int, string, error) {
		who := i % (drivers + 1)
		path := []string{"/v1/driver/trips", "/v1/driver/earnings?since=2026-11-24T08:05:00Z"}[i/(drivers+1)%2]
		if who == drivers {
			path = "/v1/admin/ledger"
		}
		req, _ := http.NewRequest("GET", "http://"+s.Addr()+path, nil)
		req.Header.Set("Authorization", "Bearer "+tokens[who])
		resp, err := hc.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}

	const reads, workers = 5000, 32
	var (
		next     atomic.Int64
		mu       sync.Mutex
		failures = map[string]int{}
		wg       sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < reads; i = int(next.Add(1)) - 1 {
				code, body, err := read(i)
				if err == nil && code == 200 {
					continue
				}
				mu.Lock()
				failures[fmt.Sprintf("%d %s %v", code, strings.TrimSpace(body), err)]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Errorf("of %d concurrent pay reads, these failed: %v", reads, failures)
	}
	for i := range drivers {
		code, _, body := authGet(t, s, "/v1/driver/trips", fmt.Sprintf("d-%d", i), dispatch.RoleDriver)
		var trips driver.Trips
		if err := json.Unmarshal([]byte(body), &trips); code != 200 || err != nil || len(trips.Trips) != 2 {
			t.Errorf("driver d-%d after the flood: %d %s", i, code, body)
		}
	}
	if n := ledgerConsumers(t, s); n != baseline {
		t.Errorf("the ledger stream has %d consumers after the reads, %d before", n, baseline)
	}
}

func mustSign(tb testing.TB, s *server, sub string, role dispatch.Role) string {
	tb.Helper()
	tok, err := s.keys.Sign(dispatch.Identity{Subject: sub, Role: role}, time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// The pay routes are rate limited per caller as the rider API is: 429 with
// Retry-After once a caller's burst is spent, other callers unaffected.
func TestPayRoutesRateLimited(t *testing.T) {
	s := mustServe(t, "--rider-rate", "0.1", "--rider-burst", "3")
	for _, c := range []struct {
		path string
		sub  string
		role dispatch.Role
	}{
		{"/v1/driver/trips", "d-1", dispatch.RoleDriver},
		{"/v1/driver/earnings", "d-1", dispatch.RoleDriver}, // the same bucket: already spent
		{"/v1/driver/earnings", "d-2", dispatch.RoleDriver},
		{"/v1/admin/ledger", "ops", dispatch.RoleAdmin},
	} {
		var codes []int
		for range 4 {
			code, hdr, body := authGet(t, s, c.path, c.sub, c.role)
			codes = append(codes, code)
			if code == 429 && (hdr.Get("Retry-After") == "" || !strings.Contains(body, `"code":"rate_limited"`)) {
				t.Fatalf("%s as %s: 429 without Retry-After or code: %v %s", c.path, c.sub, hdr, body)
			}
		}
		want := "[200 200 200 429]"
		if c.path == "/v1/driver/earnings" && c.sub == "d-1" {
			want = "[429 429 429 429]"
		}
		if fmt.Sprint(codes) != want {
			t.Errorf("%s as %s: %v, want %s", c.path, c.sub, codes, want)
		}
	}
}

// Every 5xx of every route is logged with its cause, which the client never sees.
// With the region's streams deleted from under it, a pay read and a ride request
// answer 500; with its NATS server gone, /readyz and a pay read answer 503. Each is
// logged with why.
func TestServerErrorsAreLoggedWithTheirCause(t *testing.T) {
	srv, err := natslog.StartEmbedded(t.TempDir(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stopNATS := sync.OnceFunc(srv.Close)
	defer stopNATS()
	var log syncBuffer
	s := mustServeLog(t, &log, "--nats", srv.URL())
	js, err := jetstream.New(s.nats)
	if err != nil {
		t.Fatal(err)
	}
	for _, stream := range []string{natslog.LedgerStream, natslog.RideStream} {
		if err := js.DeleteStream(context.Background(), stream); err != nil {
			t.Fatal(err)
		}
	}
	code, _, body := authGet(t, s, "/v1/driver/trips", "d-1", dispatch.RoleDriver)
	if code != 500 || strings.Contains(body, "direct") {
		t.Fatalf("trips without the ledger stream: %d %s, want a 500 that does not say why", code, body)
	}
	req, _ := http.NewRequest("POST", "http://"+s.Addr()+"/v1/rides",
		strings.NewReader(`{"pickup":{"lat":37.5665,"lng":126.978},"dropoff":{"lat":37.5512,"lng":126.9882}}`))
	req.Header.Set("Authorization", "Bearer "+mustSign(t, s, "u-1", dispatch.RoleRider))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 500 {
		t.Fatalf("ride request without the ride stream: %d, want 500", resp.StatusCode)
	}
	stopNATS()
	dispatchtest.Eventually(t, func() error { // once the client has noticed
		if code, _ := get(t, "http://"+s.Addr()+"/readyz"); code != 503 {
			return fmt.Errorf("/readyz without NATS: %d, want 503", code)
		}
		return nil
	})
	if code, _, _ := authGet(t, s, "/v1/admin/ledger", "ops", dispatch.RoleAdmin); code != 503 {
		t.Fatalf("ledger without NATS: %d, want 503", code)
	}
	logged := map[string]map[string]any{}
	for _, line := range strings.Split(log.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "http request failed" {
			logged[fmt.Sprint(rec["method"], " ", rec["path"], " ", rec["status"])] = rec
		}
	}
	for route, want := range map[string]string{
		"GET /v1/driver/trips 500": "direct get from UNDERSTUDY_LEDGER",
		"POST /v1/rides 500":       "append to the ride log",
		"GET /readyz 503":          "nats: ",
		"GET /v1/admin/ledger 503": "the durable log is away",
	} {
		rec := logged[route]
		if rec == nil || !strings.Contains(fmt.Sprint(rec["err"]), want) {
			t.Errorf("%s: logged %v, want its cause %q\nlog:\n%s", route, rec, want, log.String())
		}
	}
}
