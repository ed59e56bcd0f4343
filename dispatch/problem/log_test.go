package problem_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/problem"
)

func TestLogServerErrors(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/internal", func(w http.ResponseWriter, r *http.Request) {
		problem.Write(w, r, errors.New("dial tcp 10.0.0.7:6379: connection refused"))
	})
	mux.HandleFunc("/unavailable", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "store: timeout\n")
	})
	mux.HandleFunc("/conflict", func(w http.ResponseWriter, r *http.Request) {
		problem.Write(w, r, dispatch.ErrIllegalTransition)
	})
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "fine") })
	mux.HandleFunc("/hijack", func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := w.(http.Hijacker).Hijack() // as a websocket upgrade does
		if err != nil {
			t.Error(err)
			return
		}
		_, _ = buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhijacked")
		_ = buf.Flush()
		_ = conn.Close()
	})
	var log bytes.Buffer
	srv := httptest.NewServer(problem.LogServerErrors(slog.New(slog.NewJSONHandler(&log, nil)), mux))
	defer srv.Close()
	for path, want := range map[string]int{"/internal": 500, "/unavailable": 503, "/conflict": 409, "/ok": 200, "/hijack": 200, "/missing": 404} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || (path == "/hijack" && string(b) != "hijacked") {
			t.Errorf("%s: %d %q, want %d", path, resp.StatusCode, b, want)
		}
	}
	var got []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(log.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		got = append(got, rec)
	}
	if len(got) != 2 {
		t.Fatalf("logged %v, want the two 5xx only", got)
	}
	for _, want := range []struct{ path, level, err string }{
		{"/internal", "ERROR", "dial tcp 10.0.0.7:6379: connection refused"},
		{"/unavailable", "WARN", "store: timeout"},
	} {
		found := false
		for _, rec := range got {
			if rec["path"] == want.path {
				found = true
				if rec["level"] != want.level || rec["err"] != want.err || rec["msg"] != "http request failed" {
					t.Errorf("%s logged as %v, want level %s and cause %q", want.path, rec, want.level, want.err)
				}
			}
		}
		if !found {
			t.Errorf("%s not logged: %v", want.path, got)
		}
	}
}
