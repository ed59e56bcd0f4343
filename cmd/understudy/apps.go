package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/web"
)

// The web apps (package web) are served beside the API, outside its routes: they are
// files, not operations, so docs/openapi.yaml does not describe them. /driver/,
// /ride/ and /ops/ are the apps; /shared/ what they share; /shared/config.json the
// operator's settings the apps read (the base map tiles).
//
// Every answer is revalidated (no-cache: the driver app's service worker keeps its own
// copy for when the server is away), and each page may load only its own origin's
// files, while it may talk to any region of the deployment.
const appsCSP = "default-src 'self'; connect-src 'self' http: https: ws: wss:; img-src 'self' data: http: https:; " +
	"style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

// appConfig is /shared/config.json.
type appConfig struct {
	// Tiles is the URL template of base map tiles, "" for none.
	Tiles string `json:"tiles"`
}

// apps serves the web apps in front of next (the API): a request under an app's
// folder gets its file, the folder without its slash a redirect to it; anything else
// goes to next.
func (s *server) apps(next http.Handler) http.Handler {
	files := http.FileServerFS(web.Apps)
	config, _ := json.Marshal(appConfig{Tiles: s.cfg.MapTiles})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		top, rest, found := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		if !isApp(top) {
			next.ServeHTTP(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			next.ServeHTTP(w, r) // the API's 405/404 problem
			return
		}
		h := w.Header()
		if !found {
			http.Redirect(w, r, "/"+top+"/", http.StatusMovedPermanently)
			return
		}
		h.Set("Cache-Control", "no-cache")
		h.Set("Content-Security-Policy", appsCSP)
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Content-Type-Options", "nosniff")
		if top == "shared" && rest == "config.json" {
			h.Set("Content-Type", "application/json")
			_, _ = w.Write(config)
			return
		}
		if rest != "" && !strings.HasSuffix(rest, "/") {
			if _, err := fs.Stat(web.Apps, path.Join(top, rest)); errors.Is(err, fs.ErrNotExist) {
				next.ServeHTTP(w, r) // the API's 404 problem
				return
			}
		}
		if strings.HasSuffix(rest, ".webmanifest") {
			h.Set("Content-Type", "application/manifest+json")
		}
		files.ServeHTTP(w, r)
	})
}

// isApp reports whether top is a folder of the web apps.
func isApp(top string) bool {
	for _, p := range web.Paths {
		if p == top {
			return true
		}
	}
	return false
}

// appFor is the app a role signs in to.
func appFor(role string) string {
	switch role {
	case "driver":
		return "driver"
	case "rider":
		return "ride"
	}
	return "ops"
}

// signInLink is the link that signs a browser in to its role's app at base (a
// region's URL) with tok. The token is in the fragment, which browsers never send
// to a server, so it stays out of every access log.
func signInLink(base, role, tok string) string {
	return strings.TrimRight(base, "/") + "/" + appFor(role) + "/#token=" + url.QueryEscape(tok)
}

// validTileURL checks a --map-tiles template.
func validTileURL(t string) error {
	if t == "" {
		return nil
	}
	u, err := url.Parse(strings.NewReplacer("{z}", "0", "{x}", "0", "{y}", "0").Replace(t))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("map-tiles %q: want an http(s) URL template", t)
	}
	for _, p := range []string{"{z}", "{x}", "{y}"} {
		if !strings.Contains(t, p) {
			return fmt.Errorf("map-tiles %q: want %s in the template", t, p)
		}
	}
	return nil
}

// startLinkTTL is how long the sign-in links printed at start-up are valid.
const startLinkTTL = 12 * time.Hour

// printApps prints where the web apps are and how to sign in to them. A region on a
// loopback address with the development secret of its data directory (`make run`)
// prints ready sign-in links for a demo driver, rider and operator: nobody else can
// reach it, and its secret is on this machine anyway. Any other region prints the
// command that mints links.
func (s *server) printApps(w io.Writer) {
	base := "http://" + s.Addr()
	demo := !strings.HasPrefix(s.secretSource, "UNDERSTUDY_SECRET") && s.cfg.PublicKeys == "" && isLoopback(s.listener.Addr())
	for _, a := range []struct{ name, role, sub string }{
		{"driver app    ", "driver", "d-42"},
		{"rider page    ", "rider", "u-1"},
		{"operator's map", "admin", "ops"},
	} {
		link := ""
		if demo {
			if tok, err := s.keys.Sign(dispatch.Identity{Subject: a.sub, Role: dispatch.Role(a.role)}, min(startLinkTTL, s.cfg.MaxTokenLifetime)); err == nil {
				link = signInLink(base, a.role, tok)
			}
		}
		fmt.Fprintf(w, "%s %s/%s/\n", a.name, base, appFor(a.role))
		if link != "" {
			fmt.Fprintf(w, "  sign in as %s: %s\n", a.sub, link)
		}
	}
	fmt.Fprintf(w, "more sign-in links: understudy token --role driver --sub d-7 --link --url %s (or POST /v1/admin/links)\n", base)
}

// isLoopback reports whether addr is a loopback address.
func isLoopback(addr net.Addr) bool {
	ta, ok := addr.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// allowedOrigins are the browser origins that may open the driver socket and call the
// rider API: --allowed-origin, and in a deployment every region's own URL, since each
// region serves the web apps and a page of one region follows its driver or rider to
// another when its region is lost.
func (s *server) allowedOrigins() []string {
	out := slices.Clone(s.cfg.AllowedOrigins)
	if d := s.cfg.Deployment; d != nil {
		for _, r := range d.Regions {
			if u, err := url.Parse(r.URL); err == nil && u.Host != "" {
				out = append(out, u.Scheme+"://"+u.Host)
			}
		}
	}
	return out
}
