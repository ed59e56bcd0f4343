package rider

import (
	"net/http"
	"slices"
	"strings"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/problem"
)

// Cross-origin use from browsers (CORS). A page on an origin in API.AllowedOrigins may
// call the API: preflights are answered and every answer names the origin. The API
// authenticates with bearer tokens, never cookies, so credentials are not allowed.
const (
	// corsAllowHeaders are the request headers a page may send.
	corsAllowHeaders = "Authorization, Content-Type, Idempotency-Key, Last-Event-ID"
	// corsExposeHeaders are the response headers, beyond the CORS-safelisted ones, a
	// page may read.
	corsExposeHeaders = "Location, Retry-After, Idempotent-Replayed, WWW-Authenticate"
	// corsMaxAge is how long, in seconds, a browser may cache a preflight's answer.
	corsMaxAge = "600"
)

// originAllowed reports whether origin is on AllowedOrigins ("*" allows any).
func (a *API) originAllowed(origin string) bool {
	if origin == "" {
		return false
	}
	for _, o := range a.AllowedOrigins {
		if o == "*" || strings.EqualFold(strings.TrimSuffix(o, "/"), origin) {
			return true
		}
	}
	return false
}

// allowOrigin sets the CORS headers of an actual (not preflight) request's answer.
func (a *API) allowOrigin(w http.ResponseWriter, r *http.Request) {
	if len(a.AllowedOrigins) == 0 {
		return
	}
	h := w.Header()
	h.Add("Vary", "Origin")
	if origin := r.Header.Get("Origin"); a.originAllowed(origin) {
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
	}
}

// options answers OPTIONS on a path whose routes serve methods: a CORS preflight from
// an allowed origin gets 204 with the Access-Control-Allow-* headers; one from another
// origin, or for a method the path does not serve, a problem; a plain OPTIONS (no
// preflight) 204 with Allow.
func (a *API) options(methods []string) http.Handler {
	allow := slices.Clone(methods)
	if slices.Contains(allow, http.MethodGet) {
		allow = append(allow, http.MethodHead)
	}
	allowHeader := strings.Join(append(allow, http.MethodOptions), ", ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Allow", allowHeader)
		origin, method := r.Header.Get("Origin"), r.Header.Get("Access-Control-Request-Method")
		if origin == "" || method == "" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		h.Add("Vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
		if !a.originAllowed(origin) {
			problem.Write(w, r, dispatch.Errorf(dispatch.ECodeForbidden,
				"origin %q may not call the rider API (see --allowed-origin)", dispatch.Clip(origin, 64)))
			return
		}
		if !slices.Contains(allow, method) {
			problem.Write(w, r, dispatch.Errorf(dispatch.ECodeMethod, "%s does not serve %s; it serves %s",
				r.URL.Path, dispatch.Clip(method, 16), strings.Join(allow, ", ")))
			return
		}
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Allow-Methods", strings.Join(allow, ", "))
		h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
		h.Set("Access-Control-Max-Age", corsMaxAge)
		w.WriteHeader(http.StatusNoContent)
	})
}
