package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/jwtauth"
)

// mint runs `understudy token` with args and returns its token and what it said on stderr.
func mint(tb testing.TB, args ...string) (string, string, error) {
	tb.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), append([]string{"token"}, args...), &out, &errOut)
	return strings.TrimSpace(out.String()), errOut.String(), err
}

// TestTokenCommandUsesTheServersSecret: a token minted on the data dir of a running
// server works against it, and the command says which secret signed it.
func TestTokenCommandUsesTheServersSecret(t *testing.T) {
	t.Setenv("UNDERSTUDY_SECRET", "")
	dir := t.TempDir()
	s := mustServe(t, "--data-dir", dir)
	tok, said, err := mint(t, "--role", "driver", "--sub", "d-42", "--ttl", "1h", "--data-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	if path := filepath.Join(dir, secretFile); !strings.Contains(said, path) {
		t.Fatalf("token said %q, want it to name %s", said, path)
	}
	if code, _, detail := call(t, s, "GET", "/v1/driver/trips", tok, ""); code != 200 {
		t.Fatalf("server refused the minted token: %d %s", code, detail)
	}

	// UNDERSTUDY_SECRET wins over the file, says so, and that token is not the server's.
	t.Setenv("UNDERSTUDY_SECRET", "a-shared-secret-of-enough-length")
	tok, said, err = mint(t, "--role", "driver", "--sub", "d-42", "--data-dir", dir)
	if err != nil || !strings.Contains(said, "UNDERSTUDY_SECRET") {
		t.Fatalf("token with UNDERSTUDY_SECRET: %v, said %q", err, said)
	}
	if code, _, detail := call(t, s, "GET", "/v1/driver/trips", tok, ""); code != 401 || !strings.Contains(detail, "bad signature") {
		t.Fatalf("a token of another secret: %d %s, want 401 bad signature", code, detail)
	}
}

// TestTokenCommandRefusesWithoutTheServersSecret runs the real binary from a
// directory where no server ever ran: it used to make a new secret there, silently,
// and print a token the server then refused with "bad signature".
func TestTokenCommandRefusesWithoutTheServersSecret(t *testing.T) {
	bin := mustBuild(t)
	cwd := t.TempDir()
	cmd := exec.Command(bin, "token", "--role", "rider", "--sub", "u-1")
	cmd.Dir = cwd
	cmd.Env = append(os.Environ(), "UNDERSTUDY_SECRET=")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || out.Len() != 0 {
		t.Fatalf("token without a secret: %v, printed %q; want a failure and no token", err, out.String())
	}
	for _, want := range []string{filepath.Join("understudy-data", secretFile), "UNDERSTUDY_SECRET", "--data-dir"} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("stderr %q does not mention %q", errOut.String(), want)
		}
	}
	if entries, _ := os.ReadDir(cwd); len(entries) != 0 {
		t.Fatalf("token left %v behind in %s", entries, cwd)
	}
}

// TestTokenLifetimeIsBounded: the command mints no token longer-lived than the
// servers accept (24 h by default, --max-token-lifetime on both), and a server
// refuses one that is.
func TestTokenLifetimeIsBounded(t *testing.T) {
	t.Setenv("UNDERSTUDY_SECRET", "")
	dir := t.TempDir()
	s := mustServe(t, "--data-dir", dir, "--max-token-lifetime", "1h")
	if _, _, err := mint(t, "--role", "driver", "--sub", "d-1", "--ttl", "25h", "--data-dir", dir); err == nil ||
		!strings.Contains(err.Error(), "24h") || !strings.Contains(err.Error(), "--max-token-lifetime") {
		t.Fatalf("--ttl 25h: %v, want a refusal naming the 24h maximum and --max-token-lifetime", err)
	}
	if _, _, err := mint(t, "--role", "driver", "--sub", "d-1", "--ttl", "48h", "--max-token-lifetime", "72h", "--data-dir", dir); err != nil {
		t.Fatalf("--ttl 48h under --max-token-lifetime 72h: %v", err)
	}
	t.Setenv("UNDERSTUDY_MAX_TOKEN_LIFETIME", "2h")
	tok, _, err := mint(t, "--role", "driver", "--sub", "d-1", "--ttl", "2h", "--data-dir", dir)
	if err != nil {
		t.Fatalf("--ttl 2h under UNDERSTUDY_MAX_TOKEN_LIFETIME=2h: %v", err)
	}
	// This server takes 1 h at most.
	if code, _, detail := call(t, s, "GET", "/v1/driver/trips", tok, ""); code != 401 || !strings.Contains(detail, "maximum") {
		t.Fatalf("a 2 h token on a server of 1 h at most: %d %s, want 401", code, detail)
	}
	short, _ := (&jwtauth.Keys{Secret: s.keys.current().Secret}).Sign(dispatch.Identity{Subject: "d-1", Role: dispatch.RoleDriver}, time.Hour)
	if code, _, detail := call(t, s, "GET", "/v1/driver/trips", short, ""); code != 200 {
		t.Fatalf("a 1 h token: %d %s", code, detail)
	}
}

func TestTokenCommandErrors(t *testing.T) {
	t.Setenv("UNDERSTUDY_SECRET", "a-shared-secret-of-enough-length")
	dir := t.TempDir()
	for _, args := range [][]string{
		{"token", "--sub", "d-1"},
		{"token", "--role", "pilot", "--sub", "d-1"},
		{"token", "--role", "driver"},
		{"token", "--role", "driver", "--sub", "d 1"},
		{"token", "--role", "driver", "--sub", strings.Repeat("d", 129)},
		{"token", "--role", "driver", "--sub", "d-1", "--ttl", "-1h"},
		{"token", "--role", "driver", "--sub", "d-1", "--max-token-lifetime", "0s"},
	} {
		if err := run(context.Background(), append(args, "--data-dir", dir), io.Discard, io.Discard); err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
	t.Setenv("UNDERSTUDY_SECRET", "short")
	if err := run(context.Background(), []string{"token", "--role", "driver", "--sub", "d-1", "--data-dir", dir}, io.Discard, io.Discard); err == nil ||
		!strings.Contains(err.Error(), "too short") {
		t.Errorf("short secret: %v", err)
	}
}

// `token --link` prints the sign-in link of the role's web app at --url, the token in
// the fragment, and the token is one the server takes.
func TestTokenLinkSignsInToTheRolesApp(t *testing.T) {
	s := mustServe(t)
	for role, app := range map[string]string{"driver": "/driver/", "rider": "/ride/", "admin": "/ops/"} {
		var out, errOut strings.Builder
		base := "http://" + s.Addr()
		if err := token([]string{"--data-dir", s.cfg.DataDir, "--role", role, "--sub", "x-1", "--link", "--url", base}, &out, &errOut); err != nil {
			t.Fatalf("token --link --role %s: %v %s", role, err, errOut.String())
		}
		tok, ok := strings.CutPrefix(strings.TrimSpace(out.String()), base+app+"#token=")
		if !ok {
			t.Fatalf("token --link --role %s printed %q, want %s%s#token=...", role, out.String(), base, app)
		}
		if id, err := s.keys.Verify(tok); err != nil || string(id.Role) != role {
			t.Errorf("the %s link's token: %+v %v", role, id, err)
		}
	}
	if err := token([]string{"--data-dir", s.cfg.DataDir, "--role", "driver", "--sub", "x-1", "--link", "--url", "ftp://x"}, io.Discard, io.Discard); err == nil {
		t.Error("token --link --url ftp://x: no error")
	}
}
