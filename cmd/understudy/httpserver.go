package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/httproute"
	"github.com/understudy/understudy/dispatch/problem"
)

// HTTPConfig bounds what HTTP clients may hold, so that slow, idle or too many
// connections degrade into refusals rather than an outage. Event streams and driver
// sockets outlive the read and write timeouts: they keep deadlines of their own.
type HTTPConfig struct {
	ReadHeaderTimeout time.Duration // to send a request's headers
	ReadTimeout       time.Duration // to send a whole request, body included
	WriteTimeout      time.Duration // to answer a request (an event stream: each event)
	IdleTimeout       time.Duration // a kept-alive connection may wait for its next request
	// MaxConns caps the open connections; past it a new connection is answered 503 at
	// once and closed. 0 derives it from the open-files limit (autoMaxConns).
	MaxConns int
}

func defaultHTTPConfig() HTTPConfig {
	return HTTPConfig{
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       90 * time.Second,
	}
}

// RegisterFlags declares each setting on fs under its name, with c's values as the
// defaults.
func (c *HTTPConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.DurationVar(&c.ReadHeaderTimeout, "read-header-timeout", c.ReadHeaderTimeout, "how long a client may take to send a request's headers")
	fs.DurationVar(&c.ReadTimeout, "read-timeout", c.ReadTimeout, "how long a client may take to send a whole request, body included")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", c.WriteTimeout, "how long writing an answer, or one event of a stream, may take")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", c.IdleTimeout, "how long a kept-alive connection may wait for its next request")
	fs.IntVar(&c.MaxConns, "max-conns", c.MaxConns, "open HTTP connections at most (more are answered 503); 0 derives it from the open-files limit")
}

// Validate reports every setting out of range, by name.
func (c HTTPConfig) Validate() error {
	errs := dispatch.PositiveDurations(
		dispatch.Duration{Name: "read-header-timeout", Value: c.ReadHeaderTimeout},
		dispatch.Duration{Name: "read-timeout", Value: c.ReadTimeout},
		dispatch.Duration{Name: "write-timeout", Value: c.WriteTimeout},
		dispatch.Duration{Name: "idle-timeout", Value: c.IdleTimeout},
	)
	if c.MaxConns < 0 {
		errs = append(errs, fmt.Errorf("max-conns %d: want >= 0 (0 derives it from the open-files limit)", c.MaxConns))
	}
	return errors.Join(errs...)
}

// maxConns is the connection cap cfg asks for.
func (c HTTPConfig) maxConns() int {
	if c.MaxConns > 0 {
		return c.MaxConns
	}
	return autoMaxConns(openFilesLimit())
}

// autoMaxConns leaves, of an open-files limit, an eighth (at least 512) for what is
// not an HTTP connection: the store's and NATS's connections, the embedded NATS
// server's files, and connections being refused. An unknown limit gives 10,000.
func autoMaxConns(limit uint64) int {
	if limit == 0 {
		return 10_000
	}
	reserve := max(512, limit/8)
	if limit < reserve+64 {
		return 64
	}
	return int(min(limit-reserve, 1<<20))
}

// newHTTPServer is the server for s's routes on s's listener.
func (s *server) newHTTPServer() *http.Server {
	c := s.cfg.HTTP
	s.mux = httproute.NewMux(s.routes()...)
	return &http.Server{
		Handler:           s.handler(s.mux),
		ReadHeaderTimeout: c.ReadHeaderTimeout,
		ReadTimeout:       c.ReadTimeout,
		WriteTimeout:      c.WriteTimeout,
		IdleTimeout:       c.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// refuseLargeBodies answers 413 to a request whose declared Content-Length is over
// limit, before anything reads its body (so a client that asked for 100 Continue gets
// none). Bodies of unknown length are bounded where they are read.
func refuseLargeBodies(limit int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > limit {
			problem.Write(w, r, dispatch.Errorf(dispatch.ECodeTooLarge, "request body of %d bytes is over %d", r.ContentLength, limit))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Refusing a connection over the cap: at most maxRefusing at once, each for at most
// refuseLinger (past that, connections are closed without an answer).
const (
	maxRefusing  = 128
	refuseLinger = time.Second
)

// limitListener admits at most max connections at once. It answers each connection
// beyond that at once with 503 problem+json (Retry-After, Connection: close) and
// closes it, so a flood of connections cannot exhaust file descriptors and clients
// over the cap learn so at once instead of hanging in the accept queue.
type limitListener struct {
	net.Listener
	max     int64
	answer  []byte // the 503 response, whole
	metrics *connMetrics

	open     atomic.Int64
	refusing atomic.Int64
	wg       sync.WaitGroup // refusals being written
}

func newLimitListener(ln net.Listener, maxConns int, m *connMetrics) *limitListener {
	body, _ := json.Marshal(problem.Details{
		Type:   "https://understudy.dev/problems/" + string(dispatch.ECodeUnavailable),
		Title:  dispatch.ECodeUnavailable.Info().Title,
		Status: http.StatusServiceUnavailable,
		Detail: fmt.Sprintf("too many open connections (at most %d): retry shortly", maxConns),
		Code:   string(dispatch.ECodeUnavailable),
	})
	answer := fmt.Appendf(nil, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\n"+
		"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	return &limitListener{Listener: ln, max: int64(maxConns), answer: answer, metrics: m}
}

// Accept returns the next connection within the cap, refusing those beyond it.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) <= l.max {
			l.metrics.opened(1)
			return &limitedConn{Conn: c, release: l.release}, nil
		}
		l.open.Add(-1)
		l.refuse(c)
	}
}

func (l *limitListener) release() {
	l.open.Add(-1)
	l.metrics.opened(-1)
}

// refuse answers c 503 and closes it, without waiting.
func (l *limitListener) refuse(c net.Conn) {
	if l.refusing.Add(1) > maxRefusing {
		l.refusing.Add(-1)
		l.metrics.refused("dropped")
		_ = c.Close()
		return
	}
	l.metrics.refused("answered")
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer l.refusing.Add(-1)
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(refuseLinger))
		if _, err := c.Write(l.answer); err != nil {
			return
		}
		// Half-close, then read what the client sends until it closes: closing with its
		// request unread would make the kernel reset the connection, and a reset can
		// destroy the answer before the client reads it.
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(c, 64<<10))
	}()
}

// Close stops accepting and waits for the refusals being written (refuseLinger at most).
func (l *limitListener) Close() error {
	err := l.Listener.Close()
	l.wg.Wait()
	return err
}

// limitedConn gives its place under the cap back when it is closed.
type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// CloseWrite half-closes, as net/http does before closing a connection whose request
// it did not read whole.
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// connMetrics counts the listener's connections. A nil *connMetrics counts nothing.
type connMetrics struct {
	open    prometheus.Gauge
	refusal *prometheus.CounterVec
}

func newConnMetrics(reg prometheus.Registerer, maxConns int) *connMetrics {
	m := &connMetrics{
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "understudy_http_open_connections",
			Help: "Open HTTP connections, driver sockets and event streams included.",
		}),
		refusal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "understudy_http_refused_connections_total",
			Help: "Connections over the cap: answered 503, or dropped unanswered when too many were being refused at once.",
		}, []string{"how"}),
	}
	limit := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "understudy_http_max_connections",
		Help: "The cap on open HTTP connections (--max-conns).",
	})
	limit.Set(float64(maxConns))
	reg.MustRegister(m.open, m.refusal, limit)
	return m
}

func (m *connMetrics) opened(delta float64) {
	if m != nil {
		m.open.Add(delta)
	}
}

func (m *connMetrics) refused(how string) {
	if m != nil {
		m.refusal.WithLabelValues(how).Inc()
	}
}
