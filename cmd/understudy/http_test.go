package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
	"github.com/understudy/understudy/dispatch/problem"
	"github.com/understudy/understudy/driver"
	"github.com/understudy/understudy/driver/drivertest"
)

// The HTTP tests speak HTTP/1.1 by hand on raw connections where a client library
// would hide what they check: a body never sent, a kept-alive connection, 100
// Continue, pipelining, connections beyond the cap.

// rawConn dials s; the connection closes at cleanup, and every read or write on it
// fails after dispatchtest.Patience.
func rawConn(tb testing.TB, s *server) (net.Conn, *bufio.Reader) {
	tb.Helper()
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(dispatchtest.Patience))
	return c, bufio.NewReader(c)
}

// rawSend writes a request's head: the request line, then headers (name, value
// pairs) after Host.
func rawSend(tb testing.TB, c net.Conn, method, path string, hdr ...string) {
	tb.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: understudy\r\n", method, path)
	for i := 0; i+1 < len(hdr); i += 2 {
		fmt.Fprintf(&b, "%s: %s\r\n", hdr[i], hdr[i+1])
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(c, b.String()); err != nil {
		tb.Fatalf("send %s %s: %v", method, path, err)
	}
}

// rawRead reads one response to a request of method, body included.
func rawRead(tb testing.TB, br *bufio.Reader, method string) (*http.Response, []byte) {
	tb.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		tb.Fatalf("read the answer to %s: %v", method, err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("read the body of the answer to %s: %v", method, err)
	}
	return resp, b
}

// waitClosed reads c until the server closes it, failing if it is still open after
// dispatchtest.Patience; it returns what the server sent.
func waitClosed(tb testing.TB, c net.Conn, br *bufio.Reader) string {
	tb.Helper()
	_ = c.SetReadDeadline(time.Now().Add(dispatchtest.Patience))
	b, err := io.ReadAll(br)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		tb.Fatalf("the server still holds the connection after %s (it sent %q)", dispatchtest.Patience, b)
	}
	return string(b) // EOF or a reset: closed either way
}

// mustProblem checks that resp is a problem with status and code, and returns it.
func mustProblem(tb testing.TB, resp *http.Response, body []byte, status int, code dispatch.ECode) problem.Details {
	tb.Helper()
	var p problem.Details
	if err := json.Unmarshal(body, &p); err != nil || resp.StatusCode != status || p.Status != status ||
		p.Code != string(code) || resp.Header.Get("Content-Type") != "application/problem+json" {
		tb.Fatalf("answer %d %q %s, want %d application/problem+json with code %s", resp.StatusCode,
			resp.Header.Get("Content-Type"), body, status, code)
	}
	return p
}

func TestHTTPBodyNeverSentIsCutOff(t *testing.T) {
	s := mustServe(t, "--read-timeout", "200ms")
	tok := mustToken(t, s, "u-1", dispatch.RoleRider)
	for _, c := range []struct {
		name, method, path string
		hdr                []string
		answer             string // what the answer says before the connection closes
	}{
		{"ride request", "POST", "/v1/rides", []string{"Authorization", "Bearer " + tok}, "the request body did not arrive in time"},
		{"no token", "POST", "/v1/rides", nil, "401 Unauthorized"},
		{"unknown path", "POST", "/nope", nil, "404 Not Found"},
		{"health check", "GET", "/healthz", nil, "200 OK"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			conn, br := rawConn(t, s)
			rawSend(t, conn, c.method, c.path, append(c.hdr, "Content-Type", "application/json", "Content-Length", "100")...)
			if got := waitClosed(t, conn, br); !strings.Contains(got, c.answer) {
				t.Fatalf("answered %q before closing, want it to say %q", got, c.answer)
			}
		})
	}
}

func TestHTTPIdleKeepAliveIsClosed(t *testing.T) {
	s := mustServe(t, "--idle-timeout", "200ms")
	conn, br := rawConn(t, s)
	rawSend(t, conn, "GET", "/healthz")
	if resp, b := rawRead(t, br, "GET"); resp.StatusCode != 200 || resp.Close {
		t.Fatalf("/healthz = %d %q (close %v), want 200 kept alive", resp.StatusCode, b, resp.Close)
	}
	if rest := waitClosed(t, conn, br); rest != "" {
		t.Fatalf("the server sent %q on an idle connection", rest)
	}
}

func TestHTTPDeclaredLargeBodyIsRefusedUnread(t *testing.T) {
	s := mustServe(t)
	tok := mustToken(t, s, "u-1", dispatch.RoleRider)
	for _, c := range []struct {
		name, method, path string
		hdr                []string
	}{
		{"ride request", "POST", "/v1/rides", []string{"Authorization", "Bearer " + tok}},
		{"estimate without a token", "POST", "/v1/estimates", nil},
		{"unknown path", "PUT", "/nope", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn, br := rawConn(t, s)
			rawSend(t, conn, c.method, c.path, append(c.hdr, "Content-Type", "application/json",
				"Content-Length", "10485760", "Expect", "100-continue")...)
			resp, b := rawRead(t, br, c.method)
			if resp.StatusCode == http.StatusContinue {
				t.Fatal("the server sent 100 Continue for a body over its limit")
			}
			mustProblem(t, resp, b, http.StatusRequestEntityTooLarge, dispatch.ECodeTooLarge)
		})
	}
}

func TestHTTPConnectionCapRefusesAndRecovers(t *testing.T) {
	const maxConns = 4
	s := mustServe(t, "--max-conns", fmt.Sprint(maxConns))
	healthz := func(conn net.Conn, br *bufio.Reader) (*http.Response, []byte) {
		t.Helper()
		rawSend(t, conn, "GET", "/healthz")
		return rawRead(t, br, "GET")
	}
	type held struct {
		conn net.Conn
		br   *bufio.Reader
	}
	var hold []held
	for range maxConns {
		conn, br := rawConn(t, s)
		if resp, b := healthz(conn, br); resp.StatusCode != 200 {
			t.Fatalf("/healthz within the cap = %d %s", resp.StatusCode, b)
		}
		hold = append(hold, held{conn, br})
	}

	// A flood beyond the cap: every connection is answered 503 at once, none hangs.
	var wg sync.WaitGroup
	errs := make(chan error, 5*maxConns)
	for range 5 * maxConns {
		wg.Go(func() {
			conn, err := net.Dial("tcp", s.Addr())
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(dispatchtest.Patience))
			_, _ = io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: understudy\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				errs <- fmt.Errorf("over the cap: %w", err)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			var p problem.Details
			if err := json.Unmarshal(b, &p); err != nil || resp.StatusCode != 503 || p.Code != "unavailable" ||
				resp.Header.Get("Retry-After") == "" || resp.Header.Get("Content-Type") != "application/problem+json" {
				errs <- fmt.Errorf("over the cap: %d %v %s, want 503 unavailable with Retry-After", resp.StatusCode, resp.Header, b)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	// The clients within the cap were served all along.
	for i, h := range hold {
		if resp, b := healthz(h.conn, h.br); resp.StatusCode != 200 {
			t.Fatalf("held connection %d after the flood: /healthz = %d %s", i, resp.StatusCode, b)
		}
	}
	for _, h := range hold {
		_ = h.conn.Close()
	}
	// Once they are gone, new clients are served again.
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	dispatchtest.Eventually(t, func() error {
		resp, err := hc.Get("http://" + s.Addr() + "/healthz")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("/healthz = %d", resp.StatusCode)
		}
		return nil
	})
	_, body := get(t, "http://"+s.Addr()+"/metrics")
	// At least the flood was refused with an answer; the recovery polls above may add
	// a few more while the server has yet to see the held connections close.
	var answered int
	if _, err := fmt.Sscanf(metricLine(body, `understudy_http_refused_connections_total{how="answered"}`), "%d", &answered); err != nil || answered < 5*maxConns {
		t.Errorf("/metrics: %d connections refused with an answer (%v), want at least %d", answered, err, 5*maxConns)
	}
	if want := fmt.Sprintf("understudy_http_max_connections %d", maxConns); !strings.Contains(body, want) {
		t.Errorf("/metrics lacks %q", want)
	}
}

// metricLine returns the value of the sample named name (with its labels) in a
// Prometheus text exposition, or "" if there is none.
func metricLine(body, name string) string {
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

// A live ride's event stream and a driver's socket outlive the server's read, write
// and idle timeouts: the stream's heartbeats are the clock.
func TestHTTPStreamsOutliveServerTimeouts(t *testing.T) {
	s := mustServe(t, "--match-interval", "0", "--read-timeout", "100ms", "--write-timeout", "100ms",
		"--idle-timeout", "100ms", "--sse-heartbeat", "50ms")
	d := mustOnline(t, s, "d-1", near)
	alice := riderClient(t, s, "u-alice", dispatch.RoleRider)
	ride, err := alice.RequestRide(riderCtx(t), riderTrip, "")
	if err != nil {
		t.Fatal(err)
	}
	offer := drivertest.Next(t, d, driver.TypeOffer)

	conn, br := rawConn(t, s)
	rawSend(t, conn, "GET", "/v1/rides/"+ride.ID+"/events", "Authorization", "Bearer "+mustToken(t, s, "u-alice", dispatch.RoleRider))
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("events: %v %v", resp, err)
	}
	lines := bufio.NewScanner(resp.Body)
	next := func() string {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("the stream ended: %v", lines.Err())
		}
		return lines.Text()
	}
	for beats := 0; beats < 6; { // 300 ms of heartbeats: three times every timeout
		if next() == ": keep-alive" {
			beats++
		}
	}
	send(t, d.Accept(ctx(t), offer.OfferID))
	if a := drivertest.Next(t, d, driver.TypeAssigned); a.Ride == nil || a.Ride.ID != ride.ID {
		t.Fatalf("assigned = %s", a.Raw)
	}
	for {
		l := next()
		if strings.HasPrefix(l, "data: ") && strings.Contains(l, `"status":"matched"`) {
			return
		}
	}
}

func TestHTTPHeadOfEventsEndsAtOnce(t *testing.T) {
	s := mustServe(t, "--match-interval", "0")
	alice := riderClient(t, s, "u-alice", dispatch.RoleRider)
	ride, err := alice.RequestRide(riderCtx(t), riderTrip, "")
	if err != nil {
		t.Fatal(err)
	}
	auth := []string{"Authorization", "Bearer " + mustToken(t, s, "u-alice", dispatch.RoleRider)}

	// HEAD, then GET pipelined behind it on one connection: both are answered.
	conn, br := rawConn(t, s)
	var b strings.Builder
	for _, m := range []struct{ method, path string }{
		{"HEAD", "/v1/rides/" + ride.ID + "/events"},
		{"GET", "/v1/rides/" + ride.ID},
	} {
		fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: understudy\r\n%s: %s\r\n\r\n", m.method, m.path, auth[0], auth[1])
	}
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	head, body := rawRead(t, br, "HEAD")
	if head.StatusCode != 200 || head.Header.Get("Content-Type") != "text/event-stream" || len(body) != 0 {
		t.Fatalf("HEAD events = %d %v %q, want 200 text/event-stream and no body", head.StatusCode, head.Header, body)
	}
	got, body := rawRead(t, br, "GET")
	if got.StatusCode != 200 || !strings.Contains(string(body), `"id":"`+ride.ID+`"`) {
		t.Fatalf("GET behind HEAD = %d %s", got.StatusCode, body)
	}

	// HEADs hold none of the rider's streams: after as many as the rider may hold
	// streams, on connections still open, a stream is still granted.
	for range rideStreamsPerRider {
		conn, br := rawConn(t, s)
		rawSend(t, conn, "HEAD", "/v1/rides/"+ride.ID+"/events", auth...)
		if resp, _ := rawRead(t, br, "HEAD"); resp.StatusCode != 200 {
			t.Fatalf("HEAD events = %d", resp.StatusCode)
		}
	}
	conn, br = rawConn(t, s)
	rawSend(t, conn, "GET", "/v1/rides/"+ride.ID+"/events", auth...)
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("a stream after %d HEADs: %v %v, want 200", rideStreamsPerRider, resp, err)
	}
}

// rideStreamsPerRider is the default cap on a rider's open event streams.
const rideStreamsPerRider = 8

func TestHTTPUnknownRoutesAnswerProblems(t *testing.T) {
	s := mustServe(t)
	for _, c := range []struct {
		method, path string
		status       int
		code         dispatch.ECode
		allow        string
	}{
		{"GET", "/nope", 404, dispatch.ECodeNotFound, ""},
		{"GET", "/v1/ride", 404, dispatch.ECodeNotFound, ""},
		{"DELETE", "/v1/rides", 405, dispatch.ECodeMethod, "OPTIONS, POST"},
		{"PUT", "/v1/rides/r_x", 405, dispatch.ECodeMethod, "GET, HEAD, OPTIONS"},
		{"POST", "/healthz", 405, dispatch.ECodeMethod, "GET, HEAD"},
		{"POST", "/v1/driver/trips", 405, dispatch.ECodeMethod, "GET, HEAD, OPTIONS"}, // OPTIONS: CORS preflights (cors.go)
	} {
		conn, br := rawConn(t, s)
		rawSend(t, conn, c.method, c.path)
		resp, b := rawRead(t, br, c.method)
		p := mustProblem(t, resp, b, c.status, c.code)
		if resp.Header.Get("Allow") != c.allow || p.Instance != c.path || p.Detail == "" {
			t.Errorf("%s %s: Allow %q, problem %+v; want Allow %q", c.method, c.path, resp.Header.Get("Allow"), p, c.allow)
		}
	}
}

func TestHTTPRiderAPIAnswersCORS(t *testing.T) {
	const app = "https://app.example"
	s := mustServe(t, "--match-interval", "0", "--allowed-origin", app)
	tok := mustToken(t, s, "u-alice", dispatch.RoleRider)
	call := func(method, path string, hdr ...string) (*http.Response, []byte) {
		t.Helper()
		conn, br := rawConn(t, s)
		rawSend(t, conn, method, path, hdr...)
		return rawRead(t, br, method)
	}
	for _, c := range []struct{ path, method string }{
		{"/v1/rides", "POST"}, {"/v1/estimates", "POST"}, {"/v1/rides/r_x", "GET"},
		{"/v1/rides/r_x/cancel", "POST"}, {"/v1/rides/r_x/events", "GET"},
	} {
		resp, b := call("OPTIONS", c.path, "Origin", app, "Access-Control-Request-Method", c.method,
			"Access-Control-Request-Headers", "authorization, content-type, idempotency-key, last-event-id")
		h := resp.Header
		if resp.StatusCode != 204 || h.Get("Access-Control-Allow-Origin") != app ||
			!strings.Contains(h.Get("Access-Control-Allow-Methods"), c.method) || h.Get("Access-Control-Max-Age") == "" {
			t.Errorf("preflight %s %s = %d %v %s", c.method, c.path, resp.StatusCode, h, b)
		}
		for _, want := range []string{"Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"} {
			if !strings.Contains(h.Get("Access-Control-Allow-Headers"), want) {
				t.Errorf("preflight %s %s allows headers %q, missing %s", c.method, c.path, h.Get("Access-Control-Allow-Headers"), want)
			}
		}
	}
	// Another origin's preflight is refused, and so is a method the path does not serve.
	resp, b := call("OPTIONS", "/v1/rides", "Origin", "https://evil.example", "Access-Control-Request-Method", "POST")
	if mustProblem(t, resp, b, 403, dispatch.ECodeForbidden); resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("another origin's preflight allowed: %v", resp.Header)
	}
	resp, b = call("OPTIONS", "/v1/rides", "Origin", app, "Access-Control-Request-Method", "DELETE")
	mustProblem(t, resp, b, 405, dispatch.ECodeMethod)

	// The actual requests name the origin and expose the headers a page needs.
	body := riderBody(`{"lat":37.5665,"lng":126.978}`)
	conn, br := rawConn(t, s)
	rawSend(t, conn, "POST", "/v1/rides", "Origin", app, "Authorization", "Bearer "+tok, "Content-Type", "application/json",
		"Content-Length", fmt.Sprint(len(body)))
	if _, err := io.WriteString(conn, body); err != nil {
		t.Fatal(err)
	}
	resp, b = rawRead(t, br, "POST")
	if resp.StatusCode != 201 || resp.Header.Get("Access-Control-Allow-Origin") != app || !strings.Contains(resp.Header.Get("Vary"), "Origin") {
		t.Fatalf("POST /v1/rides from %s = %d %v %s", app, resp.StatusCode, resp.Header, b)
	}
	for _, want := range []string{"Location", "Retry-After", "Idempotent-Replayed"} {
		if !strings.Contains(resp.Header.Get("Access-Control-Expose-Headers"), want) {
			t.Errorf("exposed headers %q lack %s", resp.Header.Get("Access-Control-Expose-Headers"), want)
		}
	}
	// Errors too, so a page can read the problem.
	resp, b = call("GET", "/v1/rides/r_x", "Origin", app)
	if mustProblem(t, resp, b, 401, dispatch.ECodeUnauthorized); resp.Header.Get("Access-Control-Allow-Origin") != app {
		t.Errorf("401 from %s lacks Access-Control-Allow-Origin: %v", app, resp.Header)
	}
	resp, _ = call("GET", "/v1/rides/r_x", "Origin", "https://evil.example", "Authorization", "Bearer "+tok)
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("another origin allowed: %v", resp.Header)
	}
}

func TestHTTPRiderBodiesMustBeJSON(t *testing.T) {
	s := mustServe(t, "--match-interval", "0")
	tok := mustToken(t, s, "u-alice", dispatch.RoleRider)
	body := riderBody(`{"lat":37.5665,"lng":126.978}`)
	post := func(path string, hdr ...string) (*http.Response, []byte) {
		t.Helper()
		conn, br := rawConn(t, s)
		rawSend(t, conn, "POST", path, append([]string{"Authorization", "Bearer " + tok,
			"Content-Length", fmt.Sprint(len(body))}, hdr...)...)
		if _, err := io.WriteString(conn, body); err != nil {
			t.Fatal(err)
		}
		return rawRead(t, br, "POST")
	}
	for _, c := range []struct {
		name, path string
		hdr        []string
	}{
		{"curl's default form type", "/v1/rides", []string{"Content-Type", "application/x-www-form-urlencoded"}},
		{"no type", "/v1/rides", nil},
		{"text", "/v1/estimates", []string{"Content-Type", "text/plain"}},
		{"another charset", "/v1/rides", []string{"Content-Type", "application/json; charset=iso-8859-1"}},
		{"gzip", "/v1/rides", []string{"Content-Type", "application/json", "Content-Encoding", "gzip"}},
		{"cancel with a form", "/v1/rides/r_x/cancel", []string{"Content-Type", "application/x-www-form-urlencoded"}},
	} {
		resp, b := post(c.path, c.hdr...)
		if p := mustProblem(t, resp, b, http.StatusUnsupportedMediaType, dispatch.ECodeMediaType); p.Detail == "" {
			t.Errorf("%s: no detail", c.name)
		}
	}
	for _, ct := range []string{"application/json", "application/json; charset=utf-8", "Application/JSON; charset=UTF-8"} {
		if resp, b := post("/v1/estimates", "Content-Type", ct); resp.StatusCode != 200 {
			t.Errorf("estimate as %q = %d %s", ct, resp.StatusCode, b)
		}
	}
}

func TestHTTPConfigErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--read-timeout", "0s"}, "read-timeout"},
		{[]string{"--idle-timeout", "-1s"}, "idle-timeout"},
		{[]string{"--write-timeout", "0s"}, "write-timeout"},
		{[]string{"--max-conns", "-1"}, "max-conns"},
	} {
		_, err := loadConfig(c.args, func(string) string { return "" }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error mentioning %q", c.args, err, c.want)
		}
	}
	cfg, err := loadConfig(nil, func(k string) string { return map[string]string{"UNDERSTUDY_MAX_CONNS": "300"}[k] }, io.Discard)
	if err != nil || cfg.HTTP.maxConns() != 300 {
		t.Fatalf("UNDERSTUDY_MAX_CONNS=300: %d, %v", cfg.HTTP.maxConns(), err)
	}
}

func TestAutoMaxConnsLeavesFilesForTheRest(t *testing.T) {
	for _, c := range []struct {
		limit uint64
		want  int
	}{
		{0, 10_000}, {256, 64}, {1024, 512}, {20_000, 17_500}, {1 << 20, 917_504}, {1 << 40, 1 << 20},
	} {
		if got := autoMaxConns(c.limit); got != c.want {
			t.Errorf("autoMaxConns(%d) = %d, want %d", c.limit, got, c.want)
		}
	}
}
