package problem_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/understudy/understudy/dispatch/problem"
)

func TestRoutesAnswerUnknownPathsAndMethodsAsProblems(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /things/{id}", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(r.PathValue("id"))) })
	mux.HandleFunc("POST /things/{id}", func(w http.ResponseWriter, r *http.Request) {})
	h := problem.Routes(mux)
	for _, c := range []struct {
		method, path string
		status       int
		code, allow  string
		body         string
	}{
		{"GET", "/things/t1", 200, "", "", "t1"},
		{"HEAD", "/things/t1", 200, "", "", ""},
		{"GET", "/nothing", 404, "not_found", "", ""},
		{"DELETE", "/things/t1", 405, "method_not_allowed", "GET, HEAD, POST", ""},
		{"GET", "/things/../things/t1", http.StatusTemporaryRedirect, "", "", ""}, // the mux cleans paths as before
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(c.method, c.path, nil))
		if rec.Code != c.status || rec.Header().Get("Allow") != c.allow {
			t.Errorf("%s %s = %d Allow %q, want %d Allow %q", c.method, c.path, rec.Code, rec.Header().Get("Allow"), c.status, c.allow)
			continue
		}
		if c.code == "" {
			if c.body != "" && rec.Body.String() != c.body {
				t.Errorf("%s %s = %q, want %q", c.method, c.path, rec.Body, c.body)
			}
			continue
		}
		var d problem.Details
		if err := json.Unmarshal(rec.Body.Bytes(), &d); err != nil || d.Code != c.code || d.Status != c.status ||
			rec.Header().Get("Content-Type") != "application/problem+json" || d.Detail == "" {
			t.Errorf("%s %s = %q %s, want a %s problem", c.method, c.path, rec.Header().Get("Content-Type"), rec.Body, c.code)
		}
	}
}
