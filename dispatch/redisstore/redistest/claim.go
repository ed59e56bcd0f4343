package redistest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/understudy/understudy/dispatch/dispatchtest"
)

// claimWait is how long claim waits for a database while every one is held.
const claimWait = 10 * time.Minute

// claim returns rawURL pointing at a database of its server that no other test, in
// this process or another on this machine, holds; the database is flushed and held
// until tb's cleanup.
func claim(tb testing.TB, rawURL string) string {
	tb.Helper()
	opts, err := redis.ParseURL(rawURL)
	if err != nil {
		tb.Fatalf("REDIS_URL: %v", err)
	}
	db, release, err := acquire(opts, claimWait)
	if err != nil {
		tb.Fatalf("REDIS_URL: claim a database: %v", err)
	}
	tb.Cleanup(release)
	u, err := withDB(rawURL, db)
	if err != nil {
		tb.Fatalf("REDIS_URL: %v", err)
	}
	opts.DB = db
	c := redis.NewClient(opts)
	defer c.Close()
	if err := c.FlushDB(context.Background()).Err(); err != nil {
		tb.Fatalf("REDIS_URL %s: flush database %d: %v", rawURL, db, err)
	}
	return u
}

// acquire locks the lowest database of opts's server that nobody holds, waiting up to
// wait while all are held, and returns it with the function that releases it.
func acquire(opts *redis.Options, wait time.Duration) (db int, release func(), err error) {
	n := databases(opts)
	dir := filepath.Join(os.TempDir(), "understudy-redistest")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return 0, nil, fmt.Errorf("directory for the database locks: %w", err)
	}
	server := unsafeChars.ReplaceAllString(opts.Network+"-"+opts.Addr, "_")
	err = dispatchtest.Within(wait, 50*time.Millisecond, func() error {
		for i := range n {
			rel, err := tryLock(filepath.Join(dir, fmt.Sprintf("%s-db%d.lock", server, i)))
			if err != nil {
				return err
			}
			if rel != nil {
				db, release = i, rel
				return nil
			}
		}
		return fmt.Errorf("all %d databases of %s are held by other tests", n, opts.Addr)
	})
	return db, release, err
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9.-]`)

// databases returns how many databases the server has: its `databases` setting, or
// Redis's default of 16 where CONFIG is not allowed.
func databases(opts *redis.Options) int {
	c := redis.NewClient(opts)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if m, err := c.ConfigGet(ctx, "databases").Result(); err == nil {
		if n, err := strconv.Atoi(m["databases"]); err == nil && n > 0 {
			return n
		}
	}
	return 16
}

// withDB returns rawURL selecting database db instead of the one it names.
func withDB(rawURL string, db int) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", err
	}
	q := u.Query()
	if u.Scheme == "unix" { // the path is the socket's; the database is a parameter
		q.Set("db", strconv.Itoa(db))
	} else {
		u.Path = "/" + strconv.Itoa(db)
		q.Del("db") // it would override the path
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}
