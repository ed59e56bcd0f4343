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

// loadKeys returns the server's token keys for cfg: UNDERSTUDY_SECRET, else the secret
// kept in the data directory (generated on first use), plus any production public
// keys. It also says where the secret came from.
func loadKeys(cfg Config) (*jwtauth.Keys, string, error) {
	secret, source, err := devSecret(cfg, true)
	if err != nil {
		return nil, "", err
	}
	k := &jwtauth.Keys{Secret: secret, MaxLifetime: cfg.MaxTokenLifetime}
	if cfg.PublicKeys != "" {
		if k.PublicKeys, err = jwtauth.LoadPublicKeys(cfg.PublicKeys); err != nil {
			return nil, "", err
		}
	}
	return k, source, nil
}

// clientKeys returns the keys that sign the tokens of the client commands (token,
// drive): the server's secret, UNDERSTUDY_SECRET or the one in dataDir. It never makes
// one: a new secret would sign tokens no server accepts.
func clientKeys(cfg Config) (*jwtauth.Keys, string, error) {
	secret, source, err := devSecret(cfg, false)
	if err != nil {
		return nil, "", err
	}
	return &jwtauth.Keys{Secret: secret, MaxLifetime: cfg.MaxTokenLifetime}, source, nil
}

// devSecret returns the development secret of cfg and where it came from; create
// generates one in the data directory when there is none.
func devSecret(cfg Config, create bool) ([]byte, string, error) {
	if cfg.Secret != "" {
		if len(cfg.Secret) < 16 {
			return nil, "", errors.New("UNDERSTUDY_SECRET is too short: use at least 16 characters")
		}
		return []byte(cfg.Secret), "UNDERSTUDY_SECRET", nil
	}
	path := filepath.Join(cfg.DataDir, secretFile)
	b, err := os.ReadFile(path)
	if err == nil {
		return []byte(strings.TrimSpace(string(b))), path, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, "", fmt.Errorf("read secret: %w", err)
	}
	if !create {
		where := path
		if abs, err := filepath.Abs(path); err == nil {
			where = abs
		}
		return nil, "", fmt.Errorf("no development secret: UNDERSTUDY_SECRET is not set and %s does not exist.\n"+
			"Tokens must be signed with the secret of the server that checks them: run this where "+
			"`understudy serve` runs, pass its --data-dir, or set the same UNDERSTUDY_SECRET for both", where)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, "", fmt.Errorf("data dir: %w", err)
	}
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	secret := hex.EncodeToString(raw)
	// O_EXCL: two processes starting at once agree on the first secret written.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return devSecret(cfg, create)
	}
	if err != nil {
		return nil, "", fmt.Errorf("create secret: %w", err)
	}
	defer f.Close()
	if _, err := f.WriteString(secret + "\n"); err != nil {
		return nil, "", fmt.Errorf("write secret: %w", err)
	}
	return []byte(secret), path + " (generated now)", nil
}
