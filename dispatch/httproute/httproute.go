// Package httproute declares what an HTTP component serves: each component lists its
// routes (Routes() []httproute.Route), the server mounts them all on one mux, and a
// test holds that mux to docs/openapi.yaml.
package httproute

import "net/http"

// Route is one method and path a component serves, and its handler.
type Route struct {
	Method  string // GET, POST, OPTIONS, ...
	Path    string // the path of a net/http pattern: /v1/rides/{id}
	Handler http.Handler
}

// Pattern is r's net/http pattern: "GET /v1/rides/{id}".
func (r Route) Pattern() string { return r.Method + " " + r.Path }

// NewMux returns a ServeMux serving routes. Like ServeMux.Handle it panics on a
// pattern given twice or conflicting with another.
func NewMux(routes ...Route) *http.ServeMux {
	mux := http.NewServeMux()
	for _, r := range routes {
		mux.Handle(r.Pattern(), r.Handler)
	}
	return mux
}
