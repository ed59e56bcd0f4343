package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/understudy/understudy/dispatch/dispatchtest"
)

// A region rotates its production keys without a restart (which would cost it its
// leases): the operator adds the new public key to the --jwt-public-keys file and
// sends SIGHUP, later removes the old one and sends SIGHUP again. A file that no
// longer reads keeps the keys in use.
func TestKeysRotateOnSIGHUP(t *testing.T) {
	oldPub, oldKey := mustEd25519(t)
	newPub, newKey := mustEd25519(t)
	file := filepath.Join(t.TempDir(), "keys.pem")
	writeKeys(t, file, oldPub)
	p := startProc(t, "--data-dir", t.TempDir(), "--jwt-public-keys", file)
	oldTok, newTok := edToken(t, oldKey, "d-1"), edToken(t, newKey, "d-1")
	hc := &http.Client{Timeout: 5 * time.Second}
	t.Cleanup(hc.CloseIdleConnections)
	status := func(tok string) int {
		req, _ := http.NewRequest("GET", "http://"+p.addr+"/v1/driver/trips", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := hc.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	await := func(step string, want map[string]int) {
		t.Helper()
		dispatchtest.Eventually(t, func() error {
			for name, code := range want {
				tok := map[string]string{"old": oldTok, "new": newTok}[name]
				if got := status(tok); got != code {
					return fmt.Errorf("%s: the %s key's token answered %d, want %d", step, name, got, code)
				}
			}
			return nil
		})
	}
	hangup := func() {
		t.Helper()
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	await("at start", map[string]int{"old": 200, "new": 401})
	writeKeys(t, file, oldPub, newPub)
	hangup()
	await("new key added", map[string]int{"old": 200, "new": 200})
	writeKeys(t, file, newPub)
	hangup()
	await("old key removed", map[string]int{"old": 401, "new": 200})
	if err := os.WriteFile(file, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	hangup()
	dispatchtest.Eventually(t, func() error {
		if !strings.Contains(p.stderr(), "token keys not reloaded") {
			return fmt.Errorf("no reload error logged")
		}
		return nil
	})
	await("broken file", map[string]int{"old": 401, "new": 200})
}

func mustEd25519(tb testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	tb.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return pub, key
}

// writeKeys writes keys as a PEM file of public keys, as an operator provisions them.
func writeKeys(tb testing.TB, path string, keys ...ed25519.PublicKey) {
	tb.Helper()
	var out []byte
	for _, k := range keys {
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})...)
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		tb.Fatal(err)
	}
}

// edToken is a driver token for sub signed with key, as the primary platform's
// identity service signs them.
func edToken(tb testing.TB, key ed25519.PrivateKey, sub string) string {
	tb.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{
		"sub": sub, "role": "driver", "exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix(),
	}).SignedString(key)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}
