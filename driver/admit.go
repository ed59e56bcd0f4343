package driver

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/gorilla/websocket"

	"github.com/understudy/understudy/dispatch"
)

// subprotocolPrefix marks the subprotocol that carries a token, for browsers that
// cannot set headers on a websocket.
const subprotocolPrefix = "bearer."

// admit decides, before the upgrade, whether r may open a driver socket: the gateway
// is not draining, the Origin is allowed, the token verifies and its role is driver.
// It returns the identity and the subprotocol to echo ("" for none).
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
	token, proto, err := bearer(r)
	if err != nil {
		return dispatch.Identity{}, "", err
	}
	id, err := g.Verifier.Verify(token)
	if err != nil {
		if dispatch.ErrorCode(err) != dispatch.ECodeUnauthorized {
			err = &dispatch.Error{Code: dispatch.ECodeUnauthorized, Message: "invalid token", Err: err}
		}
		return dispatch.Identity{}, "", err
	}
	if id.Role != dispatch.RoleDriver {
		return dispatch.Identity{}, "", dispatch.Errorf(dispatch.ECodeForbidden, "the driver socket needs a driver token, not %s", id.Role)
	}
	return id, proto, nil
}

// bearer finds the token: the Authorization header if present, else a subprotocol
// "bearer.<jwt>". A bearer subprotocol is echoed whichever carried the token, since a
// browser fails a handshake whose offered subprotocols all go unanswered.
func bearer(r *http.Request) (token, proto string, err error) {
	for _, p := range websocket.Subprotocols(r) {
		if t, ok := strings.CutPrefix(p, subprotocolPrefix); ok {
			token, proto = t, p
			break
		}
	}
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, t, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return "", "", dispatch.Errorf(dispatch.ECodeUnauthorized, "Authorization must be Bearer <jwt>")
		}
		token = strings.TrimSpace(t)
	}
	if token == "" {
		return "", "", dispatch.Errorf(dispatch.ECodeUnauthorized, "missing bearer token: send Authorization: Bearer <jwt> or the subprotocol bearer.<jwt>")
	}
	return token, proto, nil
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
