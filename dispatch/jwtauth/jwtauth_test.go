package jwtauth_test

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
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

		// Claims are bounded and typed.
		{"sub of 128 chars", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": strings.Repeat("d", 128), "role": "driver", "exp": exp}), dispatch.Identity{Subject: strings.Repeat("d", 128), Role: dispatch.RoleDriver}, ""},
		{"sub of every allowed char", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "auth0|A-z_0.9:x@y", "role": "rider", "exp": exp}), dispatch.Identity{Subject: "auth0|A-z_0.9:x@y", Role: dispatch.RoleRider}, ""},
		{"sub of 129 chars", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": strings.Repeat("d", 129), "role": "driver", "exp": exp}), dispatch.Identity{}, "sub is 129 bytes long: at most 128"},
		{"sub of 5 KB", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": strings.Repeat("d", 5<<10), "role": "driver", "exp": exp}), dispatch.Identity{}, "at most 128"},
		{"token of 200 KB", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": strings.Repeat("d", 200<<10), "role": "driver", "exp": exp}), dispatch.Identity{}, "token too large"},
		{"sub with a space", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "d 42", "role": "driver", "exp": exp}), dispatch.Identity{}, "at byte 1"},
		{"sub with a wildcard", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "d-*", "role": "driver", "exp": exp}), dispatch.Identity{}, "at byte 2"},
		{"sub with a NUL", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "d\x00", "role": "driver", "exp": exp}), dispatch.Identity{}, "at byte 1"},
		{"sub not ASCII", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "기사", "role": "driver", "exp": exp}), dispatch.Identity{}, "at byte 0"},
		{"sub a number", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": 42, "role": "driver", "exp": exp}), dispatch.Identity{}, "sub is not a string"},
		{"role a list", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "d-42", "role": []string{"driver"}, "exp": exp}), dispatch.Identity{}, "role is not a string"},
		{"exp a numeric string", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "d-42", "role": "driver", "exp": fmt.Sprint(exp)}), dispatch.Identity{}, "exp is not a number"},
		{"exp null", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "d-42", "role": "driver", "exp": nil}), dispatch.Identity{}, "exp is not a number"},
		{"iat a string", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "d-42", "role": "driver", "exp": exp, "iat": fmt.Sprint(now.Unix())}), dispatch.Identity{}, "iat is not a number"},
		{"nbf a string", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "d-42", "role": "driver", "exp": exp, "nbf": fmt.Sprint(now.Unix())}), dispatch.Identity{}, "nbf is not a number"},

		// Lifetimes are bounded (24 h by default), with or without iat.
		{"lifetime of 24 h", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "d-42", "role": "driver", "iat": now.Unix(), "exp": now.Add(24 * time.Hour).Unix()}), dispatch.Identity{Subject: "d-42", Role: dispatch.RoleDriver}, ""},
		{"lifetime of 25 h", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "d-42", "role": "driver", "iat": now.Add(-2 * time.Hour).Unix(), "exp": now.Add(23 * time.Hour).Unix()}), dispatch.Identity{}, "lifetime 25h0m0s (exp - iat) is over the maximum 24h0m0s"},
		{"no iat, exp in 25 h", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "d-42", "role": "driver", "exp": now.Add(25 * time.Hour).Unix()}), dispatch.Identity{}, "expires in 25h0m0s, over the maximum lifetime 24h0m0s"},
		{"iat in the future, exp in 48 h", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "d-42", "role": "driver", "iat": now.Add(24 * time.Hour).Unix(), "exp": now.Add(48 * time.Hour).Unix()}), dispatch.Identity{}, "over the maximum lifetime"},
		{"exp in a thousand years", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "d-42", "role": "driver", "exp": 1e11}), dispatch.Identity{}, "over the maximum lifetime"},
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

func TestMaxLifetime(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	keys := &jwtauth.Keys{Secret: secret, Now: func() time.Time { return now }, MaxLifetime: time.Hour}
	tok := sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "d-42", "role": "driver", "iat": now.Unix(), "exp": now.Add(2 * time.Hour).Unix()})
	if _, err := keys.Verify(tok); err == nil || !strings.Contains(err.Error(), "over the maximum 1h0m0s") {
		t.Fatalf("2 h token under a 1 h maximum: %v", err)
	}
	if _, err := keys.Sign(dispatch.Identity{Subject: "d-42", Role: dispatch.RoleDriver}, 2*time.Hour); err == nil || !strings.Contains(err.Error(), "maximum token lifetime 1h0m0s") {
		t.Fatalf("Sign for 2 h under a 1 h maximum: %v", err)
	}
	keys.MaxLifetime = 72 * time.Hour
	minted, err := keys.Sign(dispatch.Identity{Subject: "d-42", Role: dispatch.RoleDriver}, 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Verify(minted); err != nil {
		t.Fatalf("48 h token under a 72 h maximum: %v", err)
	}
}

func TestSignRefuses(t *testing.T) {
	if _, err := (&jwtauth.Keys{}).Sign(dispatch.Identity{Subject: "d", Role: dispatch.RoleDriver}, time.Hour); err == nil {
		t.Fatal("signed without a secret")
	}
	k := &jwtauth.Keys{Secret: []byte("0123456789abcdef")}
	for _, c := range []struct {
		id  dispatch.Identity
		ttl time.Duration
	}{
		{dispatch.Identity{Subject: "d", Role: "pilot"}, time.Hour},
		{dispatch.Identity{Subject: "", Role: dispatch.RoleDriver}, time.Hour},
		{dispatch.Identity{Subject: strings.Repeat("d", 129), Role: dispatch.RoleDriver}, time.Hour},
		{dispatch.Identity{Subject: "d 1", Role: dispatch.RoleDriver}, time.Hour},
		{dispatch.Identity{Subject: "d", Role: dispatch.RoleDriver}, 0},
		{dispatch.Identity{Subject: "d", Role: dispatch.RoleDriver}, 25 * time.Hour},
	} {
		if _, err := k.Sign(c.id, c.ttl); err == nil {
			t.Errorf("signed %+v for %s", c.id, c.ttl)
		}
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
