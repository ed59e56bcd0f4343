package redisstore_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"

	"github.com/understudy/understudy/dispatch"
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
