package redisstore_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
	"github.com/understudy/understudy/dispatch/redisstore"
	"github.com/understudy/understudy/dispatch/redisstore/redistest"
	"github.com/understudy/understudy/dispatch/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestContract(t *testing.T) {
	url := redistest.URL(t)
	var n atomic.Int64
	storetest.Run(t, func(tb testing.TB) dispatch.Store {
		// A fresh key prefix per subtest: an empty store on the shared server.
		s, err := redisstore.Open(context.Background(), url, fmt.Sprintf("test%d:", n.Add(1)))
		if err != nil {
			tb.Fatal(err)
		}
		return s
	})
}

func TestOpenFailsClearly(t *testing.T) {
	if _, err := redisstore.Open(context.Background(), "redis://127.0.0.1:1/0", "x:"); err == nil {
		t.Fatal("Open of a closed port succeeded")
	}
	if _, err := redisstore.Open(context.Background(), "http://nope", "x:"); err == nil {
		t.Fatal("Open of a non-redis URL succeeded")
	}
}

func TestIdempotencyContract(t *testing.T) {
	url := redistest.URL(t)
	var n atomic.Int64
	storetest.RunIdempotency(t, func(tb testing.TB) dispatch.IdempotencyStore {
		s, err := redisstore.Open(context.Background(), url, fmt.Sprintf("idem%d:", n.Add(1)))
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { _ = s.Close() })
		return s.NewIdempotencyStore()
	})
}

// Two limiters on one Redis (two replicas) share each caller's bucket.
func TestRateLimiterIsShared(t *testing.T) {
	ctx := context.Background()
	url := redistest.URL(t)
	open := func() *redisstore.Store {
		s, err := redisstore.Open(ctx, url, "rl:")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	a, b := open().NewRateLimiter(20, 4), open().NewRateLimiter(20, 4)
	allowed := 0
	for i := range 8 { // alternating replicas, at once: the burst is 4 in all
		l := a
		if i%2 == 1 {
			l = b
		}
		wait, ok, err := l.Allow(ctx, "rider:u-1")
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			allowed++
		} else if wait <= 0 || wait > 60*time.Millisecond {
			t.Fatalf("denied with wait %s, want (0, 50ms]", wait)
		}
	}
	if allowed != 4 {
		t.Fatalf("%d of 8 allowed across two replicas, want the burst of 4", allowed)
	}
	if _, ok, _ := a.Allow(ctx, "rider:u-2"); !ok {
		t.Fatal("another caller was limited by u-1's bucket")
	}
	// The bucket refills at 20 a second.
	dispatchtest.Eventually(t, func() error {
		wait, ok, err := b.Allow(ctx, "rider:u-1")
		if err != nil || !ok {
			return fmt.Errorf("u-1's bucket has not refilled: Allow = %s, %v, %v", wait, ok, err)
		}
		return nil
	})
}
