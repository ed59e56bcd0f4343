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
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/understudy/understudy/dispatch"
)

var _ dispatch.Verifier = (*Keys)(nil)

// MaxTokenBytes bounds a token before it is parsed: generous for any signature and
// the claims of the contract, far below what would make its claims expensive.
const MaxTokenBytes = 8 << 10

// DefaultMaxLifetime is how long a token may be valid when Keys.MaxLifetime is zero.
const DefaultMaxLifetime = 24 * time.Hour

// Keys verifies tokens with an HMAC secret and/or public keys, and signs with the
// secret. The zero value verifies nothing.
type Keys struct {
	Secret     []byte             // HS256 secret; empty disables HMAC
	PublicKeys []crypto.PublicKey // ed25519.PublicKey or *rsa.PublicKey
	Now        func() time.Time   // nil means time.Now
	Leeway     time.Duration      // clock skew tolerated on exp
	// MaxLifetime bounds how long a token may be valid: exp - iat, and exp - now
	// (so a token without iat is bounded too). Zero means DefaultMaxLifetime.
	MaxLifetime time.Duration
}

// claims are the token claims the contract uses. exp, iat and nbf must be JSON
// numbers (the JWT library would also take numeric strings).
type claims struct {
	Role string `json:"role"`
	jwt.RegisteredClaims
}

// claimError is a claim that is present but unusable; its text is the client's detail.
type claimError string

func (e claimError) Error() string { return string(e) }

// UnmarshalJSON decodes the claims, refusing times that are not numbers.
func (c *claims) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	for _, name := range []string{"exp", "iat", "nbf"} {
		if v, ok := raw[name]; ok && !isNumber(v) {
			return claimError(name + " is not a number")
		}
	}
	for _, name := range []string{"sub", "role"} {
		if v, ok := raw[name]; ok && (len(v) == 0 || v[0] != '"') {
			return claimError(name + " is not a string")
		}
	}
	type plain claims // without this method
	return json.Unmarshal(b, (*plain)(c))
}

// isNumber reports whether v, valid JSON, is a number.
func isNumber(v json.RawMessage) bool {
	return len(v) > 0 && (v[0] == '-' || v[0] >= '0' && v[0] <= '9')
}

func (k *Keys) now() time.Time {
	if k.Now != nil {
		return k.Now()
	}
	return time.Now()
}

func (k *Keys) maxLifetime() time.Duration {
	if k.MaxLifetime > 0 {
		return k.MaxLifetime
	}
	return DefaultMaxLifetime
}

// Verify implements dispatch.Verifier. Besides the signature and expiry it checks the
// token's size, that sub and role are an identity (dispatch.Identity.Validate), and
// that its lifetime is within MaxLifetime.
func (k *Keys) Verify(token string) (dispatch.Identity, error) {
	if token == "" {
		return dispatch.Identity{}, dispatch.Errorf(dispatch.ECodeUnauthorized, "missing bearer token")
	}
	if len(token) > MaxTokenBytes {
		return dispatch.Identity{}, dispatch.Errorf(dispatch.ECodeUnauthorized, "invalid token: token too large (%d bytes, at most %d)", len(token), MaxTokenBytes)
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{"HS256", "HS384", "HS512", "EdDSA", "RS256", "RS384", "RS512", "PS256"}),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(k.Leeway),
		jwt.WithTimeFunc(k.now),
	}
	var c claims
	_, err := jwt.ParseWithClaims(token, &c, k.keyFor, opts...)
	if err != nil {
		return dispatch.Identity{}, &dispatch.Error{Code: dispatch.ECodeUnauthorized, Message: "invalid token: " + reason(err), Err: err}
	}
	id := dispatch.Identity{Subject: c.Subject, Role: dispatch.Role(c.Role)}
	if err := id.Validate(); err != nil {
		return dispatch.Identity{}, &dispatch.Error{Code: dispatch.ECodeUnauthorized, Message: "invalid token: " + err.Error(), Err: err}
	}
	if err := k.checkLifetime(c); err != nil {
		return dispatch.Identity{}, &dispatch.Error{Code: dispatch.ECodeUnauthorized, Message: "invalid token: " + err.Error(), Err: err}
	}
	return id, nil
}

// checkLifetime refuses a token valid for longer than MaxLifetime: from its iat, or
// from now, so neither a missing nor a backdated iat gets around the bound.
func (k *Keys) checkLifetime(c claims) error {
	maxLife := k.maxLifetime()
	exp := c.ExpiresAt.Time
	if c.IssuedAt != nil {
		if life := exp.Sub(c.IssuedAt.Time); life > maxLife {
			return fmt.Errorf("lifetime %s (exp - iat) is over the maximum %s", life.Round(time.Second), maxLife)
		}
	}
	if left := exp.Sub(k.now()); left > maxLife+k.Leeway {
		return fmt.Errorf("expires in %s, over the maximum lifetime %s", left.Round(time.Second), maxLife)
	}
	return nil
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
	var ce claimError
	switch {
	case errors.As(err, &ce):
		return ce.Error()
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

// Sign mints an HS256 token for id that expires after ttl, at most MaxLifetime.
func (k *Keys) Sign(id dispatch.Identity, ttl time.Duration) (string, error) {
	if len(k.Secret) == 0 {
		return "", errors.New("jwtauth: no HMAC secret to sign with")
	}
	if err := id.Validate(); err != nil {
		return "", fmt.Errorf("jwtauth: %w", err)
	}
	if ttl <= 0 || ttl > k.maxLifetime() {
		return "", fmt.Errorf("jwtauth: ttl %s: want more than 0 and at most the maximum token lifetime %s", ttl, k.maxLifetime())
	}
	now := k.now()
	c := claims{Role: string(id.Role), RegisteredClaims: jwt.RegisteredClaims{
		Subject:   id.Subject,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
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
