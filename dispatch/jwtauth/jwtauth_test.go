package jwtauth_test

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/jwtauth"
)

var now = time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)

func sign(tb testing.TB, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	tb.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func TestVerify(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	otherEd, _, _ := ed25519.GenerateKey(rand.Reader)
	keys := &jwtauth.Keys{Secret: secret, PublicKeys: []crypto.PublicKey{otherEd, edPub, &rsaKey.PublicKey}, Now: func() time.Time { return now }}
	exp := now.Add(time.Hour).Unix()
	good := jwt.MapClaims{"sub": "d-42", "role": "driver", "exp": exp}

	minted, err := keys.Sign(dispatch.Identity{Subject: "u-7", Role: dispatch.RoleRider}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		token string
		want  dispatch.Identity
		why   string // substring of the error, "" = valid
	}{
		{"minted by Sign", minted, dispatch.Identity{Subject: "u-7", Role: dispatch.RoleRider}, ""},
		{"HS256", sign(t, jwt.SigningMethodHS256, secret, good), dispatch.Identity{Subject: "d-42", Role: dispatch.RoleDriver}, ""},
		{"Ed25519, second key", sign(t, jwt.SigningMethodEdDSA, edPriv, good), dispatch.Identity{Subject: "d-42", Role: dispatch.RoleDriver}, ""},
		{"RS256", sign(t, jwt.SigningMethodRS256, rsaKey, jwt.MapClaims{"sub": "ops", "role": "admin", "exp": exp}), dispatch.Identity{Subject: "ops", Role: dispatch.RoleAdmin}, ""},
		{"empty", "", dispatch.Identity{}, "missing"},
		{"garbage", "not.a.jwt", dispatch.Identity{}, "malformed"},
		{"forged: other secret", sign(t, jwt.SigningMethodHS256, []byte("another secret, 32 bytes long!!"), good), dispatch.Identity{}, "bad signature"},
		{"expired", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "d-42", "role": "driver", "exp": now.Add(-time.Minute).Unix()}), dispatch.Identity{}, "expired"},
		{"no exp", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "d-42", "role": "driver"}), dispatch.Identity{}, "missing exp"},
		{"unknown role", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "d-42", "role": "root", "exp": exp}), dispatch.Identity{}, "role"},
		{"no sub", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"role": "driver", "exp": exp}), dispatch.Identity{}, "sub"},
		{"alg none", sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, good), dispatch.Identity{}, "invalid token"},
		{"HMAC signed with the public key bytes", sign(t, jwt.SigningMethodHS256, []byte(edPub), good), dispatch.Identity{}, "bad signature"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id, err := keys.Verify(c.token)
			if c.why == "" {
				if err != nil || id != c.want {
					t.Fatalf("Verify = %+v, %v; want %+v", id, err, c.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.why) {
				t.Fatalf("Verify = %+v, %v; want an error about %q", id, err, c.why)
			}
			if dispatch.ErrorCode(err) != dispatch.ECodeUnauthorized {
				t.Fatalf("code %q, want unauthorized", dispatch.ErrorCode(err))
			}
		})
	}
}

func TestSignRefuses(t *testing.T) {
	if _, err := (&jwtauth.Keys{}).Sign(dispatch.Identity{Subject: "d", Role: dispatch.RoleDriver}, time.Hour); err == nil {
		t.Fatal("signed without a secret")
	}
	k := &jwtauth.Keys{Secret: []byte("0123456789abcdef")}
	if _, err := k.Sign(dispatch.Identity{Subject: "d", Role: "pilot"}, time.Hour); err == nil {
		t.Fatal("signed an unknown role")
	}
}

func TestLoadPublicKeys(t *testing.T) {
	dir := t.TempDir()
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	var pemText []byte
	for _, k := range []any{edPub, &rsaKey.PublicKey} {
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			t.Fatal(err)
		}
		pemText = append(pemText, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})...)
	}
	path := filepath.Join(dir, "keys.pem")
	_ = os.WriteFile(path, pemText, 0o600)
	keys, err := jwtauth.LoadPublicKeys(path)
	if err != nil || len(keys) != 2 {
		t.Fatalf("LoadPublicKeys = %d keys, %v", len(keys), err)
	}
	empty := filepath.Join(dir, "empty.pem")
	_ = os.WriteFile(empty, []byte("nothing here"), 0o600)
	if _, err := jwtauth.LoadPublicKeys(empty); err == nil {
		t.Fatal("a file without keys was accepted")
	}
	if _, err := jwtauth.LoadPublicKeys(filepath.Join(dir, "missing.pem")); err == nil {
		t.Fatal("a missing file was accepted")
	}
}
