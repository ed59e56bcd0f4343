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

// StaleLedgerReads makes l's next n reads of an entry answer as a replica that has
// not applied it yet: not found.
func StaleLedgerReads(l *Ledger, n int) { l.stream = &staleStream{Stream: l.stream, misses: n} }

type staleStream struct {
	jetstream.Stream
	misses int
}

func (s *staleStream) GetLastMsgForSubject(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error) {
	if s.misses > 0 {
		s.misses--
		return nil, jetstream.ErrMsgNotFound
	}
	return s.Stream.GetLastMsgForSubject(ctx, subject)
}
