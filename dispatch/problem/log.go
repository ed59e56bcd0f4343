package problem

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
)

// causeKey is the request context key of the slot where Write notes why it answered
// with a 5xx status.
type causeKey struct{}

type cause struct{ err error }

// noteCause records err as the cause of r's 5xx answer for LogServerErrors.
func noteCause(r *http.Request, err error) {
	if r == nil {
		return
	}
	if c, ok := r.Context().Value(causeKey{}).(*cause); ok {
		c.err = err
	}
}

// maxLoggedBody is how much of a 5xx body not written by Write is logged as its cause.
const maxLoggedBody = 256

// LogServerErrors wraps next so that every answer with a 5xx status is logged with its
// cause: the error Write answered with (the client sees only "internal error"), or,
// for answers Write did not make (such as /readyz's plain text), the start of the
// body. 500s are errors, other 5xx (unavailable: no lease, shutting down) warnings.
func LogServerErrors(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := &cause{}
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), causeKey{}, c)))
		if rec.status < 500 {
			return
		}
		err := c.err
		if err == nil {
			err = errors.New(strings.TrimSpace(rec.body.String()))
		}
		level := slog.LevelError
		if rec.status != http.StatusInternalServerError {
			level = slog.LevelWarn
		}
		log.Log(r.Context(), level, "http request failed", slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.Int("status", rec.status), slog.Any("err", err))
	})
}

// statusRecorder remembers the status of an answer and the start of a 5xx body. It
// passes Flush, Hijack (websocket upgrades) and Unwrap (http.ResponseController) on.
type statusRecorder struct {
	http.ResponseWriter
	status int
	body   strings.Builder
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 && code >= 200 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	if s.status >= 500 && s.body.Len() < maxLoggedBody {
		s.body.Write(b[:min(len(b), maxLoggedBody-s.body.Len())])
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Flush() { _ = http.NewResponseController(s.ResponseWriter).Flush() }

func (s *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(s.ResponseWriter).Hijack()
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
