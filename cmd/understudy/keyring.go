package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/jwtauth"
)

var _ dispatch.Verifier = (*keyring)(nil)

// keyring is the region's token keys: the development secret and the production
// public keys (--jwt-public-keys), read again from their files on SIGHUP. A region
// rotates keys without a restart, which would cost it its leases; a file that no
// longer reads keeps the keys in use.
type keyring struct {
	cfg Config
	cur atomic.Pointer[jwtauth.Keys]
}

// openKeyring loads cfg's keys; it also says where the secret came from.
func openKeyring(cfg Config) (*keyring, string, error) {
	k := &keyring{cfg: cfg}
	source, _, err := k.load()
	if err != nil {
		return nil, "", err
	}
	return k, source, nil
}

// Verify implements dispatch.Verifier with the keys loaded last.
func (k *keyring) Verify(token string) (dispatch.Identity, error) { return k.cur.Load().Verify(token) }

// Sign signs a token with the development secret loaded last.
func (k *keyring) Sign(id dispatch.Identity, ttl time.Duration) (string, error) {
	return k.cur.Load().Sign(id, ttl)
}

// load reads the keys and puts them in use; on error the keys in use stay. It says
// where the secret came from and how many public keys there are.
func (k *keyring) load() (source string, publicKeys int, err error) {
	keys, source, err := loadKeys(k.cfg)
	if err != nil {
		return "", 0, err
	}
	k.cur.Store(keys)
	return source, len(keys.PublicKeys), nil
}

// reloadOnHangup reloads the keys at each SIGHUP until ctx is done.
func (k *keyring) reloadOnHangup(ctx context.Context, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if _, n, err := k.load(); err != nil {
					log.Error("token keys not reloaded: the keys in use stay", slog.Any("err", err))
				} else {
					log.Info("token keys reloaded", slog.Int("public_keys", n), slog.String("file", k.cfg.PublicKeys))
				}
			}
		}
	}()
}

// current is the keys loaded last.
func (k *keyring) current() *jwtauth.Keys { return k.cur.Load() }
