package natslog

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
)

// StaleReads makes s read every key as a replica that has not applied s's own
// writes yet answers a direct get: not found. Its writes still go to the bucket.
func StaleReads(s *IdempotencyStore) { s.kv = staleKV{s.kv} }

type staleKV struct{ jetstream.KeyValue }

func (staleKV) Get(context.Context, string) (jetstream.KeyValueEntry, error) {
	return nil, jetstream.ErrKeyNotFound
}
