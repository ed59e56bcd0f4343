// Package redistest gives tests a real Redis: the server at REDIS_URL when set,
// otherwise a redis-server it starts on a free port in a temporary directory and stops
// at cleanup. With neither it fails the test with what to install; it never skips.
//
// With REDIS_URL, each call to URL claims one of that server's databases (0 to its
// `databases` setting less one, whatever database the URL names) that no other test
// holds, FLUSHES it, and holds it until the test's cleanup. The claim is a lock file
// in the temporary directory, so tests of packages that `go test` runs in parallel
// processes on this machine never share, or flush, each other's database; a test
// waits while every database is held. Any database of that server may be flushed:
// point REDIS_URL only at a Redis kept for tests, and not one that tests on other
// machines use at the same time.
package redistest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/understudy/understudy/dispatch/dispatchtest"
)

// URL returns the URL of a Redis the test may use, with an empty database that is
// its own until the test ends.
func URL(tb testing.TB) string {
	tb.Helper()
	if u := os.Getenv("REDIS_URL"); u != "" {
		return claim(tb, u)
	}
	return Start(tb)
}

// Start runs a private redis-server for tb and returns its URL.
func Start(tb testing.TB) string {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Fatalf("redis-server not found: install it (Debian: apt-get install redis-server; `make test` does) or set REDIS_URL")
	}
	for attempt := 0; attempt < 5; attempt++ {
		port := freePort(tb)
		dir := tb.TempDir()
		var out bytes.Buffer
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
			"--save", "", "--appendonly", "no", "--protected-mode", "yes")
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			tb.Fatalf("start redis-server: %v", err)
		}
		url := fmt.Sprintf("redis://127.0.0.1:%d/0", port)
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		err := waitReady(url, exited)
		if err == nil {
			tb.Cleanup(func() {
				_ = cmd.Process.Kill()
				<-exited
			})
			return url
		}
		_ = cmd.Process.Kill()
		<-exited
		tb.Logf("redis-server on port %d did not start (retrying): %v: %s", port, err, out.String())
	}
	tb.Fatal("redis-server did not start after 5 attempts")
	return ""
}

// waitReady waits until the redis-server at url answers, and says why not if it
// exited first or did not answer within dispatchtest.Patience.
func waitReady(url string, exited <-chan struct{}) error {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return err
	}
	c := redis.NewClient(opts)
	defer c.Close()
	err = dispatchtest.Within(dispatchtest.Patience, 20*time.Millisecond, func() error {
		select {
		case <-exited:
			return nil // nothing left to wait for
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return c.Ping(ctx).Err()
	})
	select {
	case <-exited:
		return errors.New("redis-server exited")
	default:
	}
	return err
}

func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
