package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
	"github.com/understudy/understudy/dispatch/httproute"
	"github.com/understudy/understudy/dispatch/jwtauth"
	"github.com/understudy/understudy/dispatch/problem"
)

// authTakes lists, for every route docs/openapi.yaml says takes a token, the roles
// it takes.
var authTakes = map[string][]dispatch.Role{
	"POST /v1/rides":                   {dispatch.RoleRider, dispatch.RoleAdmin},
	"GET /v1/rides/{id}":               {dispatch.RoleRider, dispatch.RoleAdmin},
	"POST /v1/rides/{id}/cancel":       {dispatch.RoleRider, dispatch.RoleAdmin},
	"GET /v1/rides/{id}/events":        {dispatch.RoleRider, dispatch.RoleAdmin},
	"POST /v1/estimates":               {dispatch.RoleRider, dispatch.RoleAdmin},
	"GET /v1/driver/ws":                {dispatch.RoleDriver},
	"GET /v1/driver/trips":             {dispatch.RoleDriver},
	"GET /v1/driver/earnings":          {dispatch.RoleDriver},
	"GET /v1/admin/ledger":             {dispatch.RoleAdmin},
	"POST /v1/admin/areas/{name}/move": {dispatch.RoleAdmin},
	"GET /v1/admin/cells":              {dispatch.RoleAdmin},
	"POST /v1/admin/links":             {dispatch.RoleAdmin},
}

// keysDown is a Verifier whose keys cannot be had: it fails with an error that is not
// a refusal of the token, which jwtauth.Keys never does (a key set fetched over the
// network would).
type keysDown struct{}

func (keysDown) Verify(string) (dispatch.Identity, error) {
	return dispatch.Identity{}, errors.New("fetch verification keys: connection refused")
}

// TestEveryRouteAuthenticatesAlike sends every route that takes a token (the rider
// API, the pay routes, the admin ledger, the driver socket by header and by
// subprotocol) the same bad credentials, and wants the same answer from each: 401
// unauthorized with the WWW-Authenticate challenge for a missing, malformed, forged
// or expired token, one that is not Bearer, and a verifier that fails; 403 forbidden,
// without a challenge, for a role the route does not take.
func TestEveryRouteAuthenticatesAlike(t *testing.T) {
	s := mustServe(t, "--match-interval", "0")
	down := withVerifier(t, s, keysDown{}) // the same routes, verified by keysDown
	sign := func(keys *jwtauth.Keys, role dispatch.Role) string {
		tok, err := keys.Sign(dispatch.Identity{Subject: "x-1", Role: role}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	forged := sign(&jwtauth.Keys{Secret: []byte("some-other-secret-entirely")}, dispatch.RoleAdmin)
	expired := sign(&jwtauth.Keys{Secret: s.keys.current().Secret, Now: func() time.Time { return time.Now().Add(-2 * time.Hour) }}, dispatch.RoleAdmin)

	// Every route the document secures is in authTakes, and the other way round.
	doc := mustOpenAPI(t)
	secured := 0
	for path, item := range doc.model.Paths.PathItems.FromOldest() {
		for method, op := range item.GetOperations().FromOldest() {
			if p := strings.ToUpper(method) + " " + path; len(op.Security) > 0 {
				secured++
				if authTakes[p] == nil {
					t.Errorf("%s takes a token: add it to authTakes with the roles it takes", p)
				}
			}
		}
	}
	if secured != len(authTakes) {
		t.Errorf("docs/openapi.yaml secures %d routes, authTakes lists %d", secured, len(authTakes))
	}

	unauthorized := refusal{401, dispatch.ECodeUnauthorized, problem.Challenge}
	for _, c := range []struct {
		name   string
		base   string                              // the server
		header func(route string) (string, string) // the credentials' header for route
		want   refusal
	}{
		{"no token", s.Addr(), nil, unauthorized},
		{"malformed", s.Addr(), bearer("not.a.jwt"), unauthorized},
		{"forged", s.Addr(), bearer(forged), unauthorized},
		{"expired", s.Addr(), bearer(expired), unauthorized},
		{"not bearer", s.Addr(), func(string) (string, string) { return "Authorization", "Basic ZDox" }, unauthorized},
		{"verifier fails", down, bearer(sign(s.keys.current(), dispatch.RoleAdmin)), unauthorized},
		{"wrong role", s.Addr(), func(route string) (string, string) {
			return "Authorization", "Bearer " + sign(s.keys.current(), refused(authTakes[route]))
		}, refusal{403, dispatch.ECodeForbidden, ""}},
	} {
		t.Run(c.name, func(t *testing.T) {
			for route := range authTakes {
				if got := authCall(t, c.base, route, c.header); got != c.want {
					t.Errorf("%s: %+v, want %+v", route, got, c.want)
				}
			}
			if c.header == nil {
				return
			}
			// The driver socket takes the token as a subprotocol too.
			bySubprotocol := func(route string) (string, string) {
				if _, v := c.header(route); strings.HasPrefix(v, "Bearer ") {
					return "Sec-WebSocket-Protocol", "bearer." + strings.TrimPrefix(v, "Bearer ")
				}
				return c.header(route)
			}
			if got := authCall(t, c.base, "GET /v1/driver/ws", bySubprotocol); got != c.want {
				t.Errorf("GET /v1/driver/ws, token as a subprotocol: %+v, want %+v", got, c.want)
			}
		})
	}
}

// refusal is how a server refused a request.
type refusal struct {
	Status    int
	Code      dispatch.ECode
	Challenge string // WWW-Authenticate
}

// bearer sends tok in the Authorization header.
func bearer(tok string) func(string) (string, string) {
	return func(string) (string, string) { return "Authorization", "Bearer " + tok }
}

// refused returns a role that is not among takes.
func refused(takes []dispatch.Role) dispatch.Role {
	for _, r := range []dispatch.Role{dispatch.RoleDriver, dispatch.RoleRider, dispatch.RoleAdmin} {
		if !slices.Contains(takes, r) {
			return r
		}
	}
	panic("a route takes every role")
}

// authCall sends route (a pattern, "GET /v1/rides/{id}") to the server at base as a
// well-formed request of its kind (a JSON body, a websocket handshake) with the header
// credentials gives (none for nil), checks the exchange against docs/openapi.yaml, and
// returns the answer.
func authCall(tb testing.TB, base, route string, credentials func(string) (string, string)) refusal {
	tb.Helper()
	method, path, _ := strings.Cut(route, " ")
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader(`{"pickup":{"lat":37.5665,"lng":126.9780},"dropoff":{"lat":37.5512,"lng":126.9882}}`)
	}
	req, err := http.NewRequest(method, "http://"+base+pathParam.ReplaceAllString(path, "r_x"), body)
	if err != nil {
		tb.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if path == "/v1/driver/ws" {
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	}
	if credentials != nil {
		req.Header.Set(credentials(route))
	}
	hc := openAPIClient(tb)
	hc.Timeout = dispatchtest.Patience
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		tb.Fatalf("%s: %v", route, err)
	}
	defer resp.Body.Close()
	var p problem.Details
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &p)
	return refusal{resp.StatusCode, dispatch.ECode(p.Code), resp.Header.Get("WWW-Authenticate")}
}

// withVerifier serves s's routes again, built as openServer builds them on s's engine,
// store and NATS, but with v as every component's Verifier, behind s's handler. It
// returns the address.
func withVerifier(tb testing.TB, s *server, v dispatch.Verifier) string {
	tb.Helper()
	alt := &server{cfg: s.cfg, log: s.log, registry: prometheus.NewRegistry(), engine: s.engine, store: s.store,
		idem: s.idem, ledger: s.ledger, nats: s.nats, limiter: s.limiter}
	alt.gateway, alt.pay, alt.riderAPI, alt.regions = alt.newGateway(v), alt.newPay(v), alt.newRiderAPI(v), alt.newRegions(v)
	alt.cfg.MaxTokenLifetime, alt.keys = s.cfg.MaxTokenLifetime, s.keys
	alt.admin = alt.newAdmin(v)
	for _, c := range []lifecycle{alt.gateway, alt.riderAPI} {
		if err := c.Open(context.Background()); err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { _ = c.Close() })
	}
	srv := httptest.NewServer(alt.handler(httproute.NewMux(alt.routes()...)))
	tb.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}
