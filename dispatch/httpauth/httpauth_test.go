package httpauth_test

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/httpauth"
	"github.com/understudy/understudy/dispatch/jwtauth"
)

// verifierFunc is a Verifier that fails or says whatever a test needs, which the real
// one (jwtauth.Keys) never does.
type verifierFunc func(string) (dispatch.Identity, error)

func (f verifierFunc) Verify(token string) (dispatch.Identity, error) { return f(token) }

func TestAuthenticate(t *testing.T) {
	keys := &jwtauth.Keys{Secret: []byte("0123456789abcdef0123456789abcdef")}
	sign := func(sub string, role dispatch.Role) string {
		tok, err := keys.Sign(dispatch.Identity{Subject: sub, Role: role}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	driver := sign("d-1", dispatch.RoleDriver)
	down := verifierFunc(func(string) (dispatch.Identity, error) {
		return dispatch.Identity{}, errors.New("key server: connection refused")
	})
	lax := verifierFunc(func(string) (dispatch.Identity, error) {
		return dispatch.Identity{Subject: "d 1\r\n", Role: dispatch.RoleDriver}, nil
	})
	for _, c := range []struct {
		name     string
		v        dispatch.Verifier
		hdr      []string // name, value, ...
		roles    []dispatch.Role
		code     dispatch.ECode // "" for a caller
		sub      string
		inDetail string
	}{
		{"header", keys, []string{"Authorization", "Bearer " + driver}, []dispatch.Role{dispatch.RoleDriver}, "", "d-1", ""},
		{"any role", keys, []string{"Authorization", "bearer  " + driver}, nil, "", "d-1", ""},
		{"subprotocol on a handshake", keys, []string{"Upgrade", "websocket", "Sec-WebSocket-Protocol", "json, bearer." + driver}, nil, "", "d-1", ""},
		{"header before subprotocol", keys, []string{"Upgrade", "websocket", "Authorization", "Bearer " + driver, "Sec-WebSocket-Protocol", "bearer.junk"}, nil, "", "d-1", ""},
		{"subprotocol without a handshake", keys, []string{"Sec-WebSocket-Protocol", "bearer." + driver}, nil, dispatch.ECodeUnauthorized, "", "missing bearer token: send Authorization"},
		{"nothing", keys, nil, nil, dispatch.ECodeUnauthorized, "", "missing bearer token"},
		{"nothing on a handshake", keys, []string{"Upgrade", "websocket"}, nil, dispatch.ECodeUnauthorized, "", "subprotocol bearer.<jwt>"},
		{"empty bearer", keys, []string{"Authorization", "Bearer "}, nil, dispatch.ECodeUnauthorized, "", "missing bearer token"},
		{"basic", keys, []string{"Authorization", "Basic ZDox"}, nil, dispatch.ECodeUnauthorized, "", "must be Bearer"},
		{"garbage", keys, []string{"Authorization", "Bearer not.a.jwt"}, nil, dispatch.ECodeUnauthorized, "", "invalid token"},
		{"verifier down", down, []string{"Authorization", "Bearer " + driver}, nil, dispatch.ECodeUnauthorized, "", "could not be verified"},
		{"verifier lets a bad id through", lax, []string{"Authorization", "Bearer " + driver}, nil, dispatch.ECodeUnauthorized, "", "sub"},
		{"wrong role", keys, []string{"Authorization", "Bearer " + driver}, []dispatch.Role{dispatch.RoleRider, dispatch.RoleAdmin}, dispatch.ECodeForbidden, "",
			"GET /v1/rides/r_1 takes a rider or admin token, not driver"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/v1/rides/r_1", nil)
			for i := 0; i < len(c.hdr); i += 2 {
				r.Header.Add(c.hdr[i], c.hdr[i+1])
			}
			id, err := httpauth.Authenticate(c.v, r, c.roles...)
			if c.code == "" {
				if err != nil || id.Subject != c.sub {
					t.Fatalf("= %+v, %v, want %s", id, err, c.sub)
				}
				return
			}
			var de *dispatch.Error
			if !errors.As(err, &de) || de.Code != c.code || !strings.Contains(de.Message, c.inDetail) || id != (dispatch.Identity{}) {
				t.Fatalf("= %+v, %v, want a %s error mentioning %q", id, err, c.code, c.inDetail)
			}
		})
	}
}

func TestSubprotocol(t *testing.T) {
	for _, c := range []struct {
		hdr  []string
		want string
	}{
		{[]string{"Upgrade", "websocket", "Sec-WebSocket-Protocol", "json, bearer.abc"}, "bearer.abc"},
		{[]string{"Upgrade", "WebSocket", "Sec-WebSocket-Protocol", "json", "Sec-WebSocket-Protocol", "bearer.x, bearer.y"}, "bearer.x"},
		{[]string{"Upgrade", "websocket", "Sec-WebSocket-Protocol", "json"}, ""},
		{[]string{"Sec-WebSocket-Protocol", "bearer.abc"}, ""}, // not a handshake
	} {
		r := httptest.NewRequest("GET", "/v1/driver/ws", nil)
		for i := 0; i < len(c.hdr); i += 2 {
			r.Header.Add(c.hdr[i], c.hdr[i+1])
		}
		if got := httpauth.Subprotocol(r); got != c.want {
			t.Errorf("%q: Subprotocol = %q, want %q", c.hdr, got, c.want)
		}
	}
}
