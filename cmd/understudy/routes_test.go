package main

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// TestOpenAPIDescribesEveryRoute holds what the server serves to docs/openapi.yaml,
// both ways: every route of the server's mux is an operation of the document, and
// every operation of the document is served by the mux, on the route of that pattern.
// CORS preflights (OPTIONS), which the document describes in prose, must be on paths
// it describes.
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	s := mustServe(t)
	doc := mustOpenAPI(t)
	if v := doc.model.Version; !strings.HasPrefix(v, "3.1") {
		t.Fatalf("docs/openapi.yaml is OpenAPI %q, want 3.1.x", v)
	}
	documented, paths := map[string]bool{}, map[string]bool{}
	for path, item := range doc.model.Paths.PathItems.FromOldest() {
		paths[path] = true
		for method := range item.GetOperations().KeysFromOldest() {
			documented[strings.ToUpper(method)+" "+path] = true
		}
	}
	served := map[string]bool{}
	for _, r := range s.routes() {
		switch {
		case r.Method == http.MethodOptions:
			if !paths[r.Path] {
				t.Errorf("%s: a preflight on a path docs/openapi.yaml does not describe", r.Pattern())
			}
		case !documented[r.Pattern()]:
			t.Errorf("%s is served but docs/openapi.yaml does not describe it", r.Pattern())
		}
		served[r.Pattern()] = true
	}
	for p := range documented {
		method, path, _ := strings.Cut(p, " ")
		// A request the operation describes, with a value for each path parameter,
		// must reach the route of that very pattern on the server's mux.
		req := httptest.NewRequest(method, pathParam.ReplaceAllString(path, "x1"), nil)
		if _, pattern := s.mux.Handler(req); !served[p] || pattern != p {
			t.Errorf("docs/openapi.yaml describes %s, which the server does not serve (its mux routes %s %s to %q)",
				p, req.Method, req.URL.Path, pattern)
		}
	}
}

// pathParam is a parameter of an OpenAPI path template or a net/http pattern.
var pathParam = regexp.MustCompile(`\{[^}]+\}`)
