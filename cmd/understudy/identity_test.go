package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/driver"
	"github.com/understudy/understudy/driver/drivertest"
)

// forge signs claims with s's development secret as they are, unchecked, as a
// platform with its own idea of ids (or an attacker holding a stolen secret) would.
func forge(tb testing.TB, s *server, claims jwt.MapClaims) string {
	tb.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(s.keys.current().Secret)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// call makes a request to s with tok as its bearer token, holds the answer to
// docs/openapi.yaml, and returns the status and the problem's code and detail.
func call(tb testing.TB, s *server, method, path, tok, body string) (int, string, string) {
	tb.Helper()
	req, _ := http.NewRequest(method, "http://"+s.Addr()+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := openAPIClient(tb)
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var p struct{ Code, Detail string }
	_ = json.Unmarshal(b, &p)
	return resp.StatusCode, p.Code, p.Detail
}

// TestTokenSubjectIsBounded: a validly signed token whose sub is long (5 KB, 200 KB)
// or holds characters ids never have is refused with 401 on every route, and the
// region stays ready and keeps serving rides and pay afterwards. A 5 KB sub used to
// close the NATS connection for good ("maximum control line exceeded").
func TestTokenSubjectIsBounded(t *testing.T) {
	s := mustServe(t, "--match-interval", "0")
	exp := time.Now().Add(time.Hour).Unix()
	trip := `{"pickup":{"lat":37.5665,"lng":126.9780},"dropoff":{"lat":37.5512,"lng":126.9882}}`
	for _, c := range []struct {
		name, sub, detail string
	}{
		{"200 KB", strings.Repeat("d", 200<<10), "token too large"},
		{"5 KB", strings.Repeat("d", 5<<10), "sub"},
		{"129 chars", strings.Repeat("d", 129), "sub"},
		{"empty", "", "sub"},
		{"space", "d 42", "sub"},
		{"subject wildcard", "d.>", "sub"},
		{"newline", "d-42\r\nPUB x 0", "sub"},
		{"non-ASCII", "드라이버", "sub"},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, role := range []dispatch.Role{dispatch.RoleDriver, dispatch.RoleRider, dispatch.RoleAdmin} {
				tok := forge(t, s, jwt.MapClaims{"sub": c.sub, "role": string(role), "exp": exp})
				for _, r := range []struct{ method, path, body string }{
					{"GET", "/v1/driver/trips", ""},
					{"GET", "/v1/driver/earnings", ""},
					{"POST", "/v1/rides", trip},
					{"GET", "/v1/admin/ledger", ""},
				} {
					code, pcode, detail := call(t, s, r.method, r.path, tok, r.body)
					if code != 401 || pcode != "unauthorized" || !strings.Contains(detail, c.detail) {
						t.Errorf("%s %s as %s: %d %s %q, want 401 unauthorized mentioning %q", r.method, r.path, role, code, pcode, detail, c.detail)
					}
				}
			}
			tok := forge(t, s, jwt.MapClaims{"sub": c.sub, "role": "driver", "exp": exp})
			if status, _, code := handshake(t, s, http.Header{"Authorization": {"Bearer " + tok}}); status != 401 || code != "unauthorized" {
				t.Errorf("driver socket: %d %s, want 401 unauthorized", status, code)
			}
		})
	}
	if code, body := get(t, "http://"+s.Addr()+"/readyz"); code != 200 {
		t.Fatalf("/readyz after the long tokens = %d %q", code, body)
	}

	// The region still matches, completes and pays.
	d := mustOnline(t, s, "d-1", near)
	code, _, _ := call(t, s, "POST", "/v1/rides", mustToken(t, s, "u-1", dispatch.RoleRider), trip)
	if code != 201 {
		t.Fatalf("ride request after the long tokens = %d", code)
	}
	o := drivertest.Next(t, d, driver.TypeOffer)
	send(t, d.Accept(ctx(t), o.OfferID))
	drivertest.Next(t, d, driver.TypeAssigned)
	for _, step := range []func(context.Context, string) error{d.Arrived, d.Start, d.Complete} {
		send(t, step(ctx(t), o.RideID))
		drivertest.Next(t, d, driver.TypeRide)
	}
	code, _, body := authGet(t, s, "/v1/driver/trips", "d-1", dispatch.RoleDriver)
	var trips driver.Trips
	if err := json.NewDecoder(bytes.NewReader([]byte(body))).Decode(&trips); code != 200 || err != nil ||
		len(trips.Trips) != 1 || trips.Trips[0].RideID != o.RideID {
		t.Fatalf("trips after the long tokens = %d %s", code, body)
	}
}
