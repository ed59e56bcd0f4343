package redistest_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/understudy/understudy/dispatch/redisstore/redistest"
)

// holdEnv tells this test binary, run again as a child, to be "another package's test":
// it claims a database through REDIS_URL, writes a key, says so, and holds the
// database until its stdin closes; then it checks that its key is still there.
const holdEnv = "UNDERSTUDY_REDISTEST_HOLD"

// TestHeldByAnotherProcess is the child's side of TestParallelPackagesNeverShareADatabase
// and does nothing otherwise.
func TestHeldByAnotherProcess(t *testing.T) {
	if os.Getenv(holdEnv) == "" {
		return
	}
	u := redistest.URL(t)
	c := client(t, u)
	ctx := context.Background()
	if err := c.Set(ctx, "mine", "child", 0).Err(); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("holding %s\n", u)
	_, _ = io.Copy(io.Discard, os.Stdin)
	if got, err := c.Get(ctx, "mine").Result(); err != nil || got != "child" {
		t.Fatalf("the child's key = %q, %v: another test flushed its database", got, err)
	}
}

// Packages tested in parallel share REDIS_URL's server: each test gets a database of
// its own, flushed for it and for nobody else, and free again when the test ends.
func TestParallelPackagesNeverShareADatabase(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir()) // the lock files of this test's server, the child's too
	server := redistest.Start(t)
	t.Setenv("REDIS_URL", server)
	ctx := context.Background()

	child := exec.Command(os.Args[0], "-test.run=^TestHeldByAnotherProcess$", "-test.count=1")
	child.Env = append(os.Environ(), holdEnv+"=1")
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	waited := false
	t.Cleanup(func() {
		if !waited {
			_ = stdin.Close()
			_ = child.Wait()
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	childURL, ok := strings.CutPrefix(strings.TrimSpace(line), "holding ")
	if err != nil || !ok {
		t.Fatalf("child said %q, %v", line, err)
	}

	// This process claims two more while the child holds its database.
	a, b := redistest.URL(t), redistest.URL(t)
	if a == childURL || b == childURL || a == b {
		t.Fatalf("databases %s (child), %s and %s: want three different ones", childURL, a, b)
	}
	for _, u := range []string{a, b} {
		if err := client(t, u).Set(ctx, "mine", u, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := client(t, childURL).Get(ctx, "mine").Result(); err != nil || got != "child" {
		t.Fatalf("the child's key = %q, %v: this process flushed its database", got, err)
	}

	// The child ends: its key survived, and its database is free (and flushed) again.
	_ = stdin.Close()
	waited = true
	if err := child.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	again := redistest.URL(t)
	if again != childURL {
		t.Fatalf("after the child ended, got %s; want its database %s back", again, childURL)
	}
	if n, err := client(t, again).DBSize(ctx).Result(); err != nil || n != 0 {
		t.Fatalf("the database claimed again holds %d keys, %v; want it flushed", n, err)
	}
	for _, u := range []string{a, b} { // claims and flushes left the others alone
		if got, err := client(t, u).Get(ctx, "mine").Result(); err != nil || got != u {
			t.Fatalf("key in %s = %q, %v", u, got, err)
		}
	}
}

func client(tb testing.TB, u string) *redis.Client {
	tb.Helper()
	opts, err := redis.ParseURL(u)
	if err != nil {
		tb.Fatal(err)
	}
	c := redis.NewClient(opts)
	tb.Cleanup(func() { _ = c.Close() })
	return c
}
