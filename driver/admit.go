package driver

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/httpauth"
)

// admit decides, before the upgrade, whether r may open a driver socket: the gateway
// is not draining, the Origin is allowed, and r authenticates as a driver (a token in
// the Authorization header or a bearer.<jwt> subprotocol). It returns the identity and
// the subprotocol to echo ("" for none).
func (g *Gateway) admit(r *http.Request) (dispatch.Identity, string, error) {
	g.mu.Lock()
	draining := g.draining
	g.mu.Unlock()
	if draining {
		return dispatch.Identity{}, "", dispatch.Errorf(dispatch.ECodeUnavailable, "shutting down: reconnect")
	}
	if !g.originAllowed(r) {
		return dispatch.Identity{}, "", dispatch.Errorf(dispatch.ECodeForbidden, "origin %q may not open a driver socket", clip(r.Header.Get("Origin")))
	}
	id, err := httpauth.Authenticate(g.Verifier, r, dispatch.RoleDriver)
	if err != nil {
		return dispatch.Identity{}, "", err
	}
	return id, httpauth.Subprotocol(r), nil
}

// originAllowed: no Origin (a native app), an Origin on AllowedOrigins, or the same
// host as the request.
func (g *Gateway) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	for _, a := range g.AllowedOrigins {
		if a == "*" || strings.EqualFold(strings.TrimSuffix(a, "/"), origin) {
			return true
		}
	}
	u, err := url.Parse(origin)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host)
}
