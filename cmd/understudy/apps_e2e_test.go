package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/jwtauth"
)

// The web apps' end-to-end tests run web/e2e/apps.mjs in Debian's Chromium, driven
// by playwright-core as .ci/package.json pins it. Neither is skipped when missing:
// the tests install them (apt-get, npm ci), as make test's deps do, or fail.
//
// UNDERSTUDY_SCREENSHOTS=DIR keeps the screenshots there (docs/screenshots has the
// key ones); otherwise they go to the test's temporary directory.

const chromiumPath = "/usr/bin/chromium"

var (
	webToolsOnce sync.Once
	webToolsErr  error
)

// mustWebTools makes sure Chromium and playwright-core are installed, and returns
// playwright-core's folder.
func mustWebTools(tb testing.TB) string {
	tb.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		tb.Fatal(err)
	}
	pw := filepath.Join(root, ".ci", "node_modules", "playwright-core")
	webToolsOnce.Do(func() {
		sudo := func(args ...string) *exec.Cmd {
			if os.Geteuid() == 0 {
				return exec.Command(args[0], args[1:]...)
			}
			return exec.Command("sudo", args...)
		}
		install := func(what string, cmds ...*exec.Cmd) error {
			for _, c := range cmds {
				if out, err := c.CombinedOutput(); err != nil {
					return fmt.Errorf("installing %s: %s: %v\n%s", what, strings.Join(c.Args, " "), err, out)
				}
			}
			return nil
		}
		if _, err := os.Stat(chromiumPath); err != nil {
			if webToolsErr = install("chromium", sudo("apt-get", "update", "-qq"), sudo("apt-get", "install", "-y", "-qq", "chromium", "fonts-nanum")); webToolsErr != nil {
				return
			}
		}
		if _, err := exec.LookPath("npm"); err != nil {
			if webToolsErr = install("npm", sudo("apt-get", "update", "-qq"), sudo("apt-get", "install", "-y", "-qq", "nodejs", "npm")); webToolsErr != nil {
				return
			}
		}
		if _, err := os.Stat(filepath.Join(pw, "index.mjs")); err != nil {
			webToolsErr = install("playwright-core", exec.Command("npm", "ci", "--prefix", filepath.Join(root, ".ci"), "--no-audit", "--no-fund", "--loglevel=error"))
		}
	})
	if webToolsErr != nil {
		tb.Fatal(webToolsErr)
	}
	for _, p := range []string{chromiumPath, filepath.Join(pw, "index.mjs")} {
		if _, err := os.Stat(p); err != nil {
			tb.Fatalf("the web apps' tests need %s: %v", p, err)
		}
	}
	return pw
}

// runApps runs web/e2e/apps.mjs with env (KEY=value) and fails the test on a non-zero
// exit, with the script's output.
func runApps(t *testing.T, env ...string) {
	t.Helper()
	pw := mustWebTools(t)
	shots := os.Getenv("UNDERSTUDY_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	}
	shots, err := filepath.Abs(shots)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "../../web/e2e/apps.mjs")
	cmd.Env = append(os.Environ(), append([]string{"PLAYWRIGHT=" + pw, "SHOTS=" + shots, "CHROMIUM=" + chromiumPath}, env...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("web/e2e/apps.mjs (%s): %v after %s; screenshots in %s\n%s", strings.Join(env[:1], " "), err, time.Since(start).Round(time.Millisecond), shots, out.String())
	}
	t.Logf("web/e2e/apps.mjs passed in %s; screenshots in %s\n%s", time.Since(start).Round(time.Millisecond), shots, out.String())
}

// link is a sign-in link for sub at base, signed by keys.
func link(tb testing.TB, keys *jwtauth.Keys, base, role, sub string) string {
	tb.Helper()
	tok, err := keys.Sign(dispatch.Identity{Subject: sub, Role: dispatch.Role(role)}, time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	return signInLink(base, role, tok)
}

// A driver app and a rider page, in two browser contexts with granted and scripted
// geolocation, complete a whole trip against a real region: sign-in by link, going
// available, the estimate, the request, the offer, the driver coming, a reload of
// both mid-trip, the trip steps, the pay. The operator's map then shows the driver
// available, and the sign-in screens explain an expired and a refused link.
func TestWebAppsCompleteATrip(t *testing.T) {
	s := mustServe(t, "--sse-location-interval", "1s")
	base := "http://" + s.Addr()
	expired := &jwtauth.Keys{Secret: s.keys.current().Secret, Now: func() time.Time { return time.Now().Add(-3 * time.Hour) }}
	forged := &jwtauth.Keys{Secret: []byte("not-the-secret-of-this-region")}
	runApps(t, "SCENARIO=trip", "BASE="+base,
		"AT_LAT="+ftoa(atNorth.Lat), "AT_LNG="+ftoa(atNorth.Lng),
		"DRIVER_LINK="+link(t, s.keys.current(), base, "driver", "d-42"),
		"RIDER_LINK="+link(t, s.keys.current(), base, "rider", "u-1"),
		"ADMIN_LINK="+link(t, s.keys.current(), base, "admin", "ops"),
		"EXPIRED_LINK="+link(t, expired, base, "driver", "d-42"),
		"FORGED_LINK="+link(t, forged, base, "driver", "d-42"))
}

// A trip whose region is killed (kill -9) after the accept: the driver app and the
// rider page, both loaded from that region, find the region that took its area over
// (its successor, through /v1/regions) and finish the trip there; the driver app
// reloads meanwhile from its service worker's shell. The operator's map at another
// region shows the dead region and who serves its area, and moves an area.
func TestWebAppsFollowAKilledRegion(t *testing.T) {
	regionSecret(t)
	d := mustRegionsEastKillable(t, "--sse-location-interval", "1s")
	base := "http://" + d.east.addr
	runApps(t, "SCENARIO=failover", "BASE="+base,
		"AT_LAT="+ftoa(atEast.Lat), "AT_LNG="+ftoa(atEast.Lng),
		"DRIVER_LINK="+link(t, d.north.keys.current(), base, "driver", "d-7"),
		"RIDER_LINK="+link(t, d.north.keys.current(), base, "rider", "u-7"),
		"ADMIN_LINK="+link(t, d.north.keys.current(), "http://"+d.north.Addr(), "admin", "ops"),
		"KILL_PID="+strconv.Itoa(d.east.cmd.Process.Pid), "FOLLOW_REGION=south")
	// The apps went straight to the successor: no detour through a region that does
	// not serve the lost region's area.
	if dr, err := d.north.store.Driver(t.Context(), "d-7"); err == nil {
		t.Errorf("the driver app connected to north on its way to south: %+v", dr)
	}
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// The apps are served from the binary: each app's page, its files, a redirect from
// the folder without its slash, the operator's settings; a missing file is the API's
// 404 problem, not an empty page.
func TestWebAppsAreServed(t *testing.T) {
	s := mustServe(t, "--map-tiles", "https://tiles.example/{z}/{x}/{y}.png")
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, c := range []struct {
		path   string
		status int
		ctype  string
		has    string
	}{
		{"/driver/", 200, "text/html", `src="app.js"`},
		{"/driver/app.js", 200, "text/javascript", "bearer."},
		{"/driver/sw.js", 200, "text/javascript", "caches"},
		{"/driver/manifest.webmanifest", 200, "application/manifest+json", `"display": "standalone"`},
		{"/ride/", 200, "text/html", `src="app.js"`},
		{"/ops/", 200, "text/html", ""},
		{"/shared/core.js", 200, "text/javascript", "takeToken"},
		{"/shared/config.json", 200, "application/json", `"tiles":"https://tiles.example/{z}/{x}/{y}.png"`},
		{"/driver", 301, "", ""},
		{"/driver/nope.js", 404, "application/problem+json", `"code":"not_found"`},
	} {
		resp, err := hc.Get("http://" + s.Addr() + c.path)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status || !strings.HasPrefix(resp.Header.Get("Content-Type"), c.ctype) || !strings.Contains(b.String(), c.has) {
			t.Errorf("GET %s = %d %s %.80q, want %d %s containing %q", c.path, resp.StatusCode, resp.Header.Get("Content-Type"), b.String(), c.status, c.ctype, c.has)
		}
		if c.status == 200 && resp.Header.Get("Content-Security-Policy") == "" {
			t.Errorf("GET %s has no Content-Security-Policy", c.path)
		}
	}
}
