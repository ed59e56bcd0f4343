package rider_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/understudy/understudy/rider"
)

// moduleRoot is the repository root, seen from this package's directory.
const moduleRoot = ".."

// openAPI is the part of docs/openapi.yaml the tests read.
type openAPI struct {
	OpenAPI string                    `yaml:"openapi"`
	Paths   map[string]map[string]any `yaml:"paths"`
}

func loadOpenAPI(tb testing.TB) (openAPI, any) {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(moduleRoot, "docs", "openapi.yaml"))
	if err != nil {
		tb.Fatal(err)
	}
	var doc openAPI
	if err := yaml.Unmarshal(b, &doc); err != nil {
		tb.Fatalf("docs/openapi.yaml: %v", err)
	}
	var tree any
	if err := yaml.Unmarshal(b, &tree); err != nil {
		tb.Fatal(err)
	}
	return doc, tree
}

// documents reports whether the document describes method on path. A pattern's
// wildcard {name...} is the template {name}.
func (doc openAPI) documents(method, path string) bool {
	path = strings.ReplaceAll(path, "...}", "}")
	ops, ok := doc.Paths[path]
	if !ok {
		return false
	}
	if method == "" { // a pattern without a method serves them all: any will do
		for k := range ops {
			if httpMethods[k] {
				return true
			}
		}
		return false
	}
	_, ok = ops[strings.ToLower(method)]
	return ok
}

// httpMethods are the keys of an OpenAPI path item that are operations.
var httpMethods = map[string]bool{"get": true, "put": true, "post": true, "delete": true,
	"options": true, "head": true, "patch": true, "trace": true}

func TestOpenAPIDescribesEveryRiderRoute(t *testing.T) {
	doc, _ := loadOpenAPI(t)
	if !strings.HasPrefix(doc.OpenAPI, "3.1") {
		t.Fatalf("openapi %q, want 3.1.x", doc.OpenAPI)
	}
	served := map[string]bool{}
	for _, r := range rider.Routes() {
		served[r.Pattern()] = true
		if !doc.documents(r.Method, r.Path) {
			t.Errorf("docs/openapi.yaml does not describe %s", r.Pattern())
		}
	}
	// The other way round: a documented rider route that is not served is stale.
	for path, ops := range doc.Paths {
		if !strings.HasPrefix(path, "/v1/rides") && path != "/v1/estimates" {
			continue
		}
		for method := range ops {
			if !httpMethods[method] {
				continue
			}
			if p := strings.ToUpper(method) + " " + path; !served[p] {
				t.Errorf("docs/openapi.yaml describes %s, which the rider API does not serve", p)
			}
		}
	}
}

// TestOpenAPIDescribesEveryServedRoute finds every ServeMux pattern written as a
// literal in the module's code (mux.Handle("GET /healthz", ...)) and checks the
// document describes it, so a route cannot be added without its documentation.
func TestOpenAPIDescribesEveryServedRoute(t *testing.T) {
	doc, _ := loadOpenAPI(t)
	patterns := muxPatterns(t, moduleRoot)
	for _, want := range []string{"GET /healthz", "GET /readyz", "GET /metrics", "GET /v1/driver/ws"} {
		if !patterns[want] {
			t.Errorf("the scan did not find %q: is it still finding the server's routes?", want)
		}
	}
	for p := range patterns {
		method, path, ok := strings.Cut(p, " ")
		if !ok {
			method, path = "", p
		}
		if !doc.documents(method, path) {
			t.Errorf("%s is served but docs/openapi.yaml does not describe it", p)
		}
	}
}

var patternRE = regexp.MustCompile(`^(?:(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS|CONNECT|TRACE) )?(/\S*)$`)

// modulePath is the module's import path, to map its imports to directories.
const modulePath = "github.com/understudy/understudy"

// constDecl is a package-level constant: its expression and where to resolve names.
type constDecl struct {
	expr    ast.Expr
	dir     string
	imports map[string]string // local name -> directory, for the module's packages
}

// muxPatterns returns the patterns passed as the first argument of every Handle or
// HandleFunc call in the module's non-test Go files, when they are built from string
// literals and the module's string constants ("GET "+Path). Calls whose pattern is
// computed otherwise are logged; the rider API's own are checked through Routes.
func muxPatterns(tb testing.TB, root string) map[string]bool {
	tb.Helper()
	type file struct {
		f       *ast.File
		dir     string
		imports map[string]string
	}
	var files []file
	consts := map[string]map[string]constDecl{} // dir -> name -> declaration
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		dir := filepath.Dir(path)
		imports := map[string]string{}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			rel, ok := strings.CutPrefix(p, modulePath+"/")
			if !ok {
				continue
			}
			local := filepath.Base(rel)
			if imp.Name != nil {
				local = imp.Name.Name
			}
			imports[local] = filepath.Join(root, filepath.FromSlash(rel))
		}
		files = append(files, file{f, dir, imports})
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if i < len(vs.Values) {
						if consts[dir] == nil {
							consts[dir] = map[string]constDecl{}
						}
						consts[dir][n.Name] = constDecl{vs.Values[i], dir, imports}
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("scan %s: %v", root, err)
	}

	var eval func(e ast.Expr, dir string, imports map[string]string, depth int) (string, bool)
	eval = func(e ast.Expr, dir string, imports map[string]string, depth int) (string, bool) {
		if depth > 16 {
			return "", false
		}
		switch v := e.(type) {
		case *ast.BasicLit:
			if v.Kind == token.STRING {
				s, err := strconv.Unquote(v.Value)
				return s, err == nil
			}
		case *ast.ParenExpr:
			return eval(v.X, dir, imports, depth+1)
		case *ast.BinaryExpr:
			if v.Op == token.ADD {
				a, okA := eval(v.X, dir, imports, depth+1)
				b, okB := eval(v.Y, dir, imports, depth+1)
				return a + b, okA && okB
			}
		case *ast.Ident:
			if c, ok := consts[dir][v.Name]; ok {
				return eval(c.expr, c.dir, c.imports, depth+1)
			}
		case *ast.SelectorExpr:
			if pkg, ok := v.X.(*ast.Ident); ok {
				if c, ok := consts[imports[pkg.Name]][v.Sel.Name]; ok {
					return eval(c.expr, c.dir, c.imports, depth+1)
				}
			}
		}
		return "", false
	}

	found := map[string]bool{}
	for _, f := range files {
		ast.Inspect(f.f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) != 2 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || (sel.Sel.Name != "Handle" && sel.Sel.Name != "HandleFunc") {
				return true
			}
			s, ok := eval(call.Args[0], f.dir, f.imports, 0)
			switch {
			case ok && patternRE.MatchString(s):
				found[s] = true
			case !ok:
				tb.Logf("%s: a %s pattern that is not a constant; not checked here", fset.Position(call.Pos()), sel.Sel.Name)
			}
			return true
		})
	}
	return found
}

// TestOpenAPIReferencesResolve checks every $ref points at something in the document.
func TestOpenAPIReferencesResolve(t *testing.T) {
	_, tree := loadOpenAPI(t)
	var walk func(node any, at string)
	walk = func(node any, at string) {
		switch v := node.(type) {
		case map[string]any:
			for k, child := range v {
				if ref, ok := child.(string); k == "$ref" && ok {
					if resolve(tree, ref) == nil {
						t.Errorf("%s: $ref %q resolves to nothing", at, ref)
					}
					continue
				}
				walk(child, at+"/"+k)
			}
		case []any:
			for i, child := range v {
				walk(child, at+"/"+strconv.Itoa(i))
			}
		}
	}
	walk(tree, "")
}

// resolve follows a local JSON pointer (#/a/b) in tree.
func resolve(tree any, ref string) any {
	rest, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil
	}
	node := tree
	for _, part := range strings.Split(rest, "/") {
		m, ok := node.(map[string]any)
		if !ok {
			return nil
		}
		part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
		if node, ok = m[part]; !ok {
			return nil
		}
	}
	return node
}
