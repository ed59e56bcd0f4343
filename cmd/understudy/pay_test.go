package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/understudy/understudy/dispatch"
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
