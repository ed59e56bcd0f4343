package problem

import (
	"net/http"

	"github.com/understudy/understudy/dispatch"
)

// Routes serves mux, answering as problems the requests it has no route for, which
// http.ServeMux itself answers in plain text: 404 not_found for an unknown path, and
// 405 method_not_allowed, with the Allow header the mux computes, for a known path
// asked with a method none of its routes serves.
func Routes(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" { // a route, or the mux's redirect to a cleaned path
			mux.ServeHTTP(w, r)
			return
		}
		// Let the mux's own answer say which it is (and what to Allow), then replace it.
		var c capture
		h.ServeHTTP(&c, r)
		switch c.status {
		case http.StatusMethodNotAllowed:
			allow := c.header.Get("Allow")
			w.Header().Set("Allow", allow)
			Write(w, r, dispatch.Errorf(dispatch.ECodeMethod, "%s does not serve %s; it serves %s",
				dispatch.Clip(r.URL.Path, maxEcho), dispatch.Clip(r.Method, maxEcho), allow))
		case http.StatusNotFound:
			Write(w, r, dispatch.Errorf(dispatch.ECodeNotFound, "no route for %s", dispatch.Clip(r.URL.Path, maxEcho)))
		default:
			mux.ServeHTTP(w, r)
		}
	})
}

// capture is a ResponseWriter that keeps the status and headers and drops the body.
type capture struct {
	header http.Header
	status int
}

func (c *capture) Header() http.Header {
	if c.header == nil {
		c.header = make(http.Header)
	}
	return c.header
}

func (c *capture) WriteHeader(status int) {
	if c.status == 0 {
		c.status = status
	}
}

func (c *capture) Write(b []byte) (int, error) {
	c.WriteHeader(http.StatusOK)
	return len(b), nil
}

// maxEcho bounds the path and method a 404 or 405 quotes back.
const maxEcho = 128
