package natslog_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/natslog"
	"github.com/understudy/understudy/dispatch/storetest"
)

// mustConnect starts an embedded JetStream in dir and connects to it.
func mustConnect(tb testing.TB, dir string) (*nats.Conn, func()) {
	tb.Helper()
	srv, err := natslog.StartEmbedded(dir, "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	nc, err := srv.Connect()
	if err != nil {
		srv.Close()
		tb.Fatal(err)
	}
	return nc, func() { nc.Close(); srv.Close() }
}

func mustOpenIdempotency(tb testing.TB, nc *nats.Conn, region string) *natslog.IdempotencyStore {
	tb.Helper()
	s, err := natslog.OpenIdempotencyStore(context.Background(), nc, region, 24*time.Hour, 1)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func TestIdempotencyContract(t *testing.T) {
	nc, stop := mustConnect(t, t.TempDir())
	defer stop()
	// One server for the suite; each store is a region of its own, so none sees
	// another's keys.
	storetest.RunIdempotency(t, func(tb testing.TB) dispatch.IdempotencyStore {
		return mustOpenIdempotency(tb, nc, tb.Name())
	})
}

// Keys outlive the server: a retried request after a restart replays its ride.
func TestIdempotencyKeysSurviveRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	nc, stop := mustConnect(t, dir)
	s := mustOpenIdempotency(t, nc, "seoul")
	if _, ok, err := s.Reserve(ctx, "u-1", "k-done", "fp-a", time.Hour); err != nil || !ok {
		t.Fatalf("Reserve = %v, %v", ok, err)
	}
	if err := s.Complete(ctx, "u-1", "k-done", "fp-a", "r-1", 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.Reserve(ctx, "u-1", "k-pending", "fp-b", time.Hour); err != nil || !ok {
		t.Fatalf("Reserve = %v, %v", ok, err)
	}
	stop()

	nc, stop = mustConnect(t, dir)
	defer stop()
	s = mustOpenIdempotency(t, nc, "seoul")
	rec, ok, err := s.Reserve(ctx, "u-1", "k-done", "fp-a", time.Hour)
	if err != nil || ok || rec.RideID != "r-1" || rec.Fingerprint != "fp-a" {
		t.Fatalf("Reserve after the restart = %+v, %v, %v; want the done record of r-1", rec, ok, err)
	}
	if rec, err := s.Lookup(ctx, "u-1", "k-pending"); err != nil || rec.Done() || rec.Fingerprint != "fp-b" {
		t.Fatalf("pending key after the restart = %+v, %v", rec, err)
	}
	// The request that held it is gone with the process; it may still complete (the
	// API never does across a restart) and the reservation expires on its own.
	if err := s.Complete(ctx, "u-1", "k-pending", "fp-b", "r-2", time.Hour); err != nil {
		t.Fatal(err)
	}
	// Another region on the same NATS has keys of its own.
	busan := mustOpenIdempotency(t, nc, "busan")
	if _, err := busan.Lookup(ctx, "u-1", "k-done"); !errors.Is(err, dispatch.ErrIdempotencyKeyNotFound) {
		t.Fatalf("busan's Lookup of seoul's key: got %v, want ErrIdempotencyKeyNotFound", err)
	}
}

// Whatever a client puts in a key or a scope, the bucket key stays short and valid.
func TestIdempotencyAwkwardKeys(t *testing.T) {
	ctx := context.Background()
	nc, stop := mustConnect(t, t.TempDir())
	defer stop()
	s := mustOpenIdempotency(t, nc, "seoul")
	for _, k := range []struct{ scope, key string }{
		{"u-1", "a.b.*.>"}, {"u-1", "~!@#$%^&()"}, {strings.Repeat("운", 5000), strings.Repeat("k", 255)}, {"u-1", ""},
	} {
		if _, ok, err := s.Reserve(ctx, k.scope, k.key, "fp", time.Hour); err != nil || !ok {
			t.Fatalf("Reserve(%.20q, %.20q) = %v, %v", k.scope, k.key, ok, err)
		}
		if rec, err := s.Lookup(ctx, k.scope, k.key); err != nil || rec.Fingerprint != "fp" {
			t.Fatalf("Lookup(%.20q, %.20q) = %+v, %v", k.scope, k.key, rec, err)
		}
	}
	// A record may not outlive the bucket.
	if _, _, err := s.Reserve(ctx, "u-1", "k-long", "fp", 25*time.Hour); err == nil {
		t.Fatal("Reserve with a TTL over the bucket's succeeded")
	}
}

// TestIdempotencyKeysNeedNoReadBack: a region completes or releases the key it has
// just reserved by compare-and-set on the reservation's own revision, so a read from
// a replica that has not applied the reservation yet (KV gets are direct gets) cannot
// make it miss the key. Before, such a release found nothing to release and left the
// key reserved (the client's retries answered 409 for a minute), and such a
// completion was refused with the ride already created.
func TestIdempotencyKeysNeedNoReadBack(t *testing.T) {
	nc, stop := mustConnect(t, t.TempDir())
	defer stop()
	ctx := context.Background()
	lagging, fresh := mustOpenIdempotency(t, nc, "deployment"), mustOpenIdempotency(t, nc, "deployment")
	natslog.StaleReads(lagging)

	if _, ok, err := lagging.Reserve(ctx, "u-1", "released", "fp", time.Minute); err != nil || !ok {
		t.Fatalf("reserve: %v, %v", ok, err)
	}
	if err := lagging.Release(ctx, "u-1", "released", "fp"); err != nil {
		t.Fatal(err)
	}
	if rec, ok, err := fresh.Reserve(ctx, "u-1", "released", "fp", time.Minute); err != nil || !ok {
		t.Fatalf("reserve after the release: %+v reserved %v, %v; want the key free", rec, ok, err)
	}

	if _, ok, err := lagging.Reserve(ctx, "u-1", "completed", "fp", time.Minute); err != nil || !ok {
		t.Fatalf("reserve: %v, %v", ok, err)
	}
	if err := lagging.Complete(ctx, "u-1", "completed", "fp", "r_1", time.Hour); err != nil {
		t.Fatalf("complete with stale reads: %v", err)
	}
	if rec, err := fresh.Lookup(ctx, "u-1", "completed"); err != nil || rec.RideID != "r_1" {
		t.Fatalf("lookup after the completion: %+v, %v; want ride r_1", rec, err)
	}
}
