// Package httpauth is the HTTP side of identity: it finds a request's bearer token,
// has a dispatch.Verifier check it and checks the caller's role against the route's.
// Every authenticated route and the driver socket call Authenticate, so they refuse
// alike: 401 unauthorized for a missing, malformed, forged or expired token or a
// verifier that fails (problem.Write adds the WWW-Authenticate challenge), 403
// forbidden for a role the route does not take.
package httpauth

import (
	"net/http"
	"slices"
	"strings"

	"github.com/understudy/understudy/dispatch"
)

// SubprotocolPrefix marks the websocket subprotocol that carries a token,
// "bearer.<jwt>", for browsers, which cannot set headers on a websocket.
const SubprotocolPrefix = "bearer."

// Authenticate returns who r's bearer token says is calling, if a token verifies and
// its role is one of roles (any role when roles is empty). The token comes from the
// Authorization header or, on a websocket handshake without one, from a bearer.<jwt>
// subprotocol. Its errors are *dispatch.Error with code ECodeUnauthorized or
// ECodeForbidden, whatever v returned.
func Authenticate(v dispatch.Verifier, r *http.Request, roles ...dispatch.Role) (dispatch.Identity, error) {
	token, err := Token(r)
	if err != nil {
		return dispatch.Identity{}, err
	}
	id, err := v.Verify(token)
	if err != nil {
		if dispatch.ErrorCode(err) != dispatch.ECodeUnauthorized {
			// A Verifier only says unauthorized; anything else is still a refusal.
			err = &dispatch.Error{Code: dispatch.ECodeUnauthorized, Message: "invalid token: it could not be verified", Err: err}
		}
		return dispatch.Identity{}, err
	}
	if err := id.Validate(); err != nil { // a Verifier promises it; a broken one must not let a bad id in
		return dispatch.Identity{}, &dispatch.Error{Code: dispatch.ECodeUnauthorized, Message: "invalid token: " + err.Error(), Err: err}
	}
	if len(roles) > 0 && !slices.Contains(roles, id.Role) {
		return dispatch.Identity{}, dispatch.Errorf(dispatch.ECodeForbidden, "%s %s takes a %s token, not %s",
			r.Method, dispatch.Clip(r.URL.Path, 128), roleList(roles), id.Role)
	}
	return id, nil
}

// Token returns r's bearer token: that of "Authorization: Bearer <token>" or, on a
// websocket handshake without an Authorization header, of the first subprotocol
// "bearer.<token>" offered.
func Token(r *http.Request) (string, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, token, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return "", dispatch.Errorf(dispatch.ECodeUnauthorized, "Authorization must be Bearer <jwt>")
		}
		if token = strings.TrimSpace(token); token != "" {
			return token, nil
		}
	} else if p := Subprotocol(r); p != "" {
		if token := strings.TrimPrefix(p, SubprotocolPrefix); token != "" {
			return token, nil
		}
	}
	if isWebsocket(r) {
		return "", dispatch.Errorf(dispatch.ECodeUnauthorized, "missing bearer token: send Authorization: Bearer <jwt> or the subprotocol %s<jwt>", SubprotocolPrefix)
	}
	return "", dispatch.Errorf(dispatch.ECodeUnauthorized, "missing bearer token: send Authorization: Bearer <jwt>")
}

// Subprotocol returns the first bearer.<jwt> subprotocol a websocket handshake
// offers, or "". The socket echoes it whichever carried the token, since a browser
// fails a handshake whose offered subprotocols all go unanswered.
func Subprotocol(r *http.Request) string {
	if !isWebsocket(r) {
		return ""
	}
	for _, h := range r.Header.Values("Sec-Websocket-Protocol") {
		for p := range strings.SplitSeq(h, ",") {
			if p = strings.TrimSpace(p); strings.HasPrefix(p, SubprotocolPrefix) {
				return p
			}
		}
	}
	return ""
}

// isWebsocket reports whether r asks to upgrade to a websocket (RFC 6455, 4.2.1).
func isWebsocket(r *http.Request) bool {
	for _, h := range r.Header.Values("Upgrade") {
		for p := range strings.SplitSeq(h, ",") {
			if strings.EqualFold(strings.TrimSpace(p), "websocket") {
				return true
			}
		}
	}
	return false
}

// roleList names roles for a message: "driver", "rider or admin".
func roleList(roles []dispatch.Role) string {
	names := make([]string, len(roles))
	for i, r := range roles {
		names[i] = string(r)
	}
	if len(names) == 1 {
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}
