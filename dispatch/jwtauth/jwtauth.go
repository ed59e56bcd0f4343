// Package jwtauth verifies and mints the JWT bearer tokens of the client contract:
// claims sub, role and exp, signed with an HMAC secret (development) or checked
// against Ed25519/RSA public keys (production), all held locally so identity keeps
// working while the primary platform is down.
package jwtauth

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/understudy/understudy/dispatch"
)

var _ dispatch.Verifier = (*Keys)(nil)

// Keys verifies tokens with an HMAC secret and/or public keys, and signs with the
// secret. The zero value verifies nothing.
type Keys struct {
	Secret     []byte             // HS256 secret; empty disables HMAC
	PublicKeys []crypto.PublicKey // ed25519.PublicKey or *rsa.PublicKey
	Now        func() time.Time   // nil means time.Now
	Leeway     time.Duration      // clock skew tolerated on exp
}

type claims struct {
	Role string `json:"role"`
	jwt.RegisteredClaims
}

// Verify implements dispatch.Verifier.
func (k *Keys) Verify(token string) (dispatch.Identity, error) {
	if token == "" {
		return dispatch.Identity{}, dispatch.Errorf(dispatch.ECodeUnauthorized, "missing bearer token")
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{"HS256", "HS384", "HS512", "EdDSA", "RS256", "RS384", "RS512", "PS256"}),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(k.Leeway),
	}
	if k.Now != nil {
		opts = append(opts, jwt.WithTimeFunc(k.Now))
	}
	var c claims
	_, err := jwt.ParseWithClaims(token, &c, k.keyFor, opts...)
	if err != nil {
		return dispatch.Identity{}, &dispatch.Error{Code: dispatch.ECodeUnauthorized, Message: "invalid token: " + reason(err), Err: err}
	}
	role := dispatch.Role(c.Role)
	if c.Subject == "" || !role.Valid() {
		return dispatch.Identity{}, dispatch.Errorf(dispatch.ECodeUnauthorized, "invalid token: needs sub and a role of driver, rider or admin")
	}
	return dispatch.Identity{Subject: c.Subject, Role: role}, nil
}

// keyFor picks the verification keys for the token's algorithm.
func (k *Keys) keyFor(t *jwt.Token) (any, error) {
	var set jwt.VerificationKeySet
	switch t.Method.(type) {
	case *jwt.SigningMethodHMAC:
		if len(k.Secret) > 0 {
			set.Keys = append(set.Keys, k.Secret)
		}
	case *jwt.SigningMethodEd25519:
		for _, pk := range k.PublicKeys {
			if ek, ok := pk.(ed25519.PublicKey); ok {
				set.Keys = append(set.Keys, ek)
			}
		}
	case *jwt.SigningMethodRSA, *jwt.SigningMethodRSAPSS:
		for _, pk := range k.PublicKeys {
			if rk, ok := pk.(*rsa.PublicKey); ok {
				set.Keys = append(set.Keys, rk)
			}
		}
	}
	if len(set.Keys) == 0 {
		return nil, fmt.Errorf("no key for algorithm %s", t.Method.Alg())
	}
	return set, nil
}

func reason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "expired"
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "bad signature"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "missing exp"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "no key for its algorithm"
	}
	return "rejected"
}

// Sign mints an HS256 token for id that expires after ttl.
func (k *Keys) Sign(id dispatch.Identity, ttl time.Duration) (string, error) {
	if len(k.Secret) == 0 {
		return "", errors.New("jwtauth: no HMAC secret to sign with")
	}
	if id.Subject == "" || !id.Role.Valid() {
		return "", fmt.Errorf("jwtauth: need a subject and a role of driver, rider or admin, got %q %q", id.Subject, id.Role)
	}
	now := time.Now
	if k.Now != nil {
		now = k.Now
	}
	c := claims{Role: string(id.Role), RegisteredClaims: jwt.RegisteredClaims{
		Subject:   id.Subject,
		IssuedAt:  jwt.NewNumericDate(now()),
		ExpiresAt: jwt.NewNumericDate(now().Add(ttl)),
	}}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(k.Secret)
}

// LoadPublicKeys reads PEM-encoded public keys (PKIX "PUBLIC KEY" blocks, Ed25519 or
// RSA) from path.
func LoadPublicKeys(path string) ([]crypto.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read public keys: %w", err)
	}
	var keys []crypto.PublicKey
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		pk, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("public key in %s: %w", path, err)
		}
		switch pk.(type) {
		case ed25519.PublicKey, *rsa.PublicKey:
			keys = append(keys, pk)
		default:
			return nil, fmt.Errorf("public key in %s: %T is not Ed25519 or RSA", path, pk)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("no PEM public keys in %s", path)
	}
	return keys, nil
}
