package rider

import (
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/httpauth"
	"github.com/understudy/understudy/dispatch/httproute"
	"github.com/understudy/understudy/dispatch/problem"
)

// route is the route method path served by fn, wrapped in metrics, panic recovery,
// CORS headers, the body checks, bearer authentication (role rider or admin), the
// caller's rate limit, and errors written as problems.
func (a *API) route(method, path string, fn func(http.ResponseWriter, *http.Request, dispatch.Identity) error) httproute.Route {
	pattern := method + " " + path
	streaming := path == pathRideEvents
	return httproute.Route{Method: method, Path: path, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w}
		a.allowOrigin(rec, r)
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				a.Logger.Error("rider handler panicked", slog.String("route", pattern),
					slog.String("panic", fmt.Sprint(p)), slog.String("stack", string(debug.Stack())))
				if !rec.wrote {
					problem.Write(rec, r, dispatch.Errorf(dispatch.ECodeInternal, "internal error"))
				}
			}
			a.Metrics.observe(pattern, rec.status, time.Since(start), streaming)
		}()
		err := a.serve(rec, r, fn)
		if err == nil {
			return
		}
		if dispatch.ErrorCode(err) == dispatch.ECodeInternal {
			a.Logger.Error("rider request failed", slog.String("route", pattern), slog.Any("err", err))
		}
		if rec.wrote { // a stream that already started: nothing more to tell the client
			return
		}
		problem.Write(rec, r, err)
	})}
}

func (a *API) serve(w http.ResponseWriter, r *http.Request, fn func(http.ResponseWriter, *http.Request, dispatch.Identity) error) error {
	if err := a.checkBody(r); err != nil {
		return err
	}
	id, err := httpauth.Authenticate(a.Verifier, r, dispatch.RoleRider, dispatch.RoleAdmin)
	if err != nil {
		return err
	}
	if err := dispatch.Throttle(r.Context(), a.Limiter, id, a.Logger); err != nil {
		return err
	}
	return fn(w, r, id)
}

// checkBody refuses, from the headers alone, a body the API would not take: one
// declared larger than MaxBodyBytes (413: the body is never read, so a client that
// sent Expect: 100-continue gets no 100 Continue), and one that is not JSON
// (Content-Type application/json, with any parameters; a charset must be utf-8) or
// comes in a Content-Encoding the API does not decode (415). A request without a body
// passes.
func (a *API) checkBody(r *http.Request) error {
	if r.ContentLength > a.Config.MaxBodyBytes {
		return dispatch.Errorf(dispatch.ECodeTooLarge, "request body of %d bytes is over %d", r.ContentLength, a.Config.MaxBodyBytes)
	}
	if r.ContentLength == 0 {
		return nil
	}
	for _, enc := range r.Header.Values("Content-Encoding") {
		if e := strings.TrimSpace(enc); e != "" && !strings.EqualFold(e, "identity") {
			return dispatch.Errorf(dispatch.ECodeMediaType, "Content-Encoding %q is not decoded here: send the body uncompressed", dispatch.Clip(e, 32))
		}
	}
	ct := r.Header.Get("Content-Type")
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		if ct == "" {
			return dispatch.Errorf(dispatch.ECodeMediaType, "a request body needs Content-Type: application/json")
		}
		return dispatch.Errorf(dispatch.ECodeMediaType, "Content-Type %q: want application/json", dispatch.Clip(ct, 64))
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return dispatch.Errorf(dispatch.ECodeMediaType, "charset %q: want utf-8", dispatch.Clip(cs, 32))
	}
	return nil
}

// recorder remembers the status a handler answered, for metrics and to know whether
// an error can still be written. Unwrap lets http.ResponseController flush streams.
type recorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wrote && code >= 200 {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if !r.wrote {
		r.status, r.wrote = http.StatusOK, true
	}
	return r.ResponseWriter.Write(b)
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// errBodyTooLarge reports whether err is http.MaxBytesReader's refusal.
func errBodyTooLarge(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}
