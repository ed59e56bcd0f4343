package main

import (
	"net/http"
	"slices"
	"strings"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/httproute"
	"github.com/understudy/understudy/dispatch/problem"
)

// withCORS lets pages of the allowed origins (allowedOrigins) call routes, as the
// rider API lets them call it (rider/cors.go, the same headers): every answer to an
// allowed Origin names it, and each path gets a preflight route (OPTIONS). The driver
// app reads its pay from whichever region it is connected to, which after a failover
// is not the region that served the page.
func (s *server) withCORS(routes []httproute.Route) []httproute.Route {
	origins := s.allowedOrigins()
	allowed := func(o string) bool {
		return o != "" && slices.ContainsFunc(origins, func(a string) bool { return a == "*" || strings.EqualFold(strings.TrimSuffix(a, "/"), o) })
	}
	methods := map[string][]string{}
	var paths []string
	out := make([]httproute.Route, 0, 2*len(routes))
	for _, r := range routes {
		if methods[r.Path] == nil {
			paths = append(paths, r.Path)
		}
		methods[r.Path] = append(methods[r.Path], r.Method)
		next := r.Handler
		r.Handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if len(origins) > 0 {
				w.Header().Add("Vary", "Origin")
				if o := req.Header.Get("Origin"); allowed(o) {
					w.Header().Set("Access-Control-Allow-Origin", o)
					w.Header().Set("Access-Control-Expose-Headers", "Retry-After, WWW-Authenticate")
				}
			}
			next.ServeHTTP(w, req)
		})
		out = append(out, r)
	}
	for _, p := range paths {
		allow := strings.Join(append(slices.Clone(methods[p]), http.MethodHead, http.MethodOptions), ", ")
		out = append(out, httproute.Route{Method: http.MethodOptions, Path: p, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			w.Header().Set("Allow", allow)
			o, m := req.Header.Get("Origin"), req.Header.Get("Access-Control-Request-Method")
			switch {
			case o == "" || m == "":
			case !allowed(o):
				problem.Write(w, req, dispatch.Errorf(dispatch.ECodeForbidden, "origin %q may not call %s (see --allowed-origin)", dispatch.Clip(o, 64), p))
				return
			default:
				w.Header().Add("Vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
				w.Header().Set("Access-Control-Allow-Origin", o)
				w.Header().Set("Access-Control-Allow-Methods", allow)
				w.Header().Set("Access-Control-Allow-Headers", "Authorization")
				w.Header().Set("Access-Control-Max-Age", "600")
			}
			w.WriteHeader(http.StatusNoContent)
		})})
	}
	return out
}
