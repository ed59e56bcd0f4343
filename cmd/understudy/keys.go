package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/understudy/understudy/dispatch/jwtauth"
)

// secretFile is where the default run keeps its generated development secret.
const secretFile = "dev-secret"

// loadKeys returns the token keys of cfg: UNDERSTUDY_SECRET, else the secret kept in
// the data directory (generated on first use), plus any production public keys.
func loadKeys(cfg Config) (*jwtauth.Keys, error) {
	secret, err := devSecret(cfg)
	if err != nil {
		return nil, err
	}
	k := &jwtauth.Keys{Secret: secret}
	if cfg.PublicKeys != "" {
		if k.PublicKeys, err = jwtauth.LoadPublicKeys(cfg.PublicKeys); err != nil {
			return nil, err
		}
	}
	return k, nil
}

func devSecret(cfg Config) ([]byte, error) {
	if cfg.Secret != "" {
		if len(cfg.Secret) < 16 {
			return nil, errors.New("UNDERSTUDY_SECRET is too short: use at least 16 characters")
		}
		return []byte(cfg.Secret), nil
	}
	path := filepath.Join(cfg.DataDir, secretFile)
	b, err := os.ReadFile(path)
	if err == nil {
		return []byte(strings.TrimSpace(string(b))), nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read secret: %w", err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	secret := hex.EncodeToString(raw)
	// O_EXCL: two processes starting at once agree on the first secret written.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return devSecret(cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("create secret: %w", err)
	}
	defer f.Close()
	if _, err := f.WriteString(secret + "\n"); err != nil {
		return nil, fmt.Errorf("write secret: %w", err)
	}
	return []byte(secret), nil
}
