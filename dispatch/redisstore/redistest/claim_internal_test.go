package redistest

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestWithDB(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"redis://127.0.0.1:6379", "redis://127.0.0.1:6379/7"},
		{"redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/7"},
		{"redis://u:p@h:1/3?db=2&dial_timeout=3", "redis://u:p@h:1/7?dial_timeout=3"},
		{"rediss://h:1/3", "rediss://h:1/7"},
		{"unix:///run/redis.sock?db=1", "unix:///run/redis.sock?db=7"},
	} {
		got, err := withDB(c.in, 7)
		if err != nil || got != c.want {
			t.Errorf("withDB(%q, 7) = %q, %v; want %q", c.in, got, err, c.want)
			continue
		}
		if opts, err := redis.ParseURL(got); err != nil || opts.DB != 7 {
			t.Errorf("%q selects database %v, %v; want 7", got, opts, err)
		}
	}
}

// With every database held, a claim waits for one to be released and takes it.
func TestAcquireWaitsWhileEveryDatabaseIsHeld(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir()) // the lock files of this test's server
	opts, err := redis.ParseURL(Start(t))
	if err != nil {
		t.Fatal(err)
	}
	n := databases(opts)
	if n != 16 {
		t.Fatalf("redis-server has %d databases, want its default of 16", n)
	}
	releases := make([]func(), n)
	for i := range n {
		db, release, err := acquire(opts, time.Second)
		if err != nil || db != i {
			t.Fatalf("claim %d: database %d, %v", i, db, err)
		}
		releases[i] = release
	}
	defer func() {
		for _, r := range releases {
			r()
		}
	}()
	if _, _, err := acquire(opts, 100*time.Millisecond); err == nil {
		t.Fatal("a 17th claim got a database")
	}
	time.AfterFunc(200*time.Millisecond, releases[5])
	db, release, err := acquire(opts, time.Minute)
	if err != nil || db != 5 {
		t.Fatalf("claim while database 5 was being released: %d, %v", db, err)
	}
	releases[5] = release
}
