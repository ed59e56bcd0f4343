package natslog

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go/jetstream"
)

// ensureStream creates the stream cfg describes, or updates it to cfg if it exists
// with another configuration. It creates first, unlike jetstream's
// CreateOrUpdateStream, which asks for an update first: in a cluster, when several
// regions start at once and each asks to update a stream that does not exist yet
// while another's create is under way, none of them hears back (seen with
// nats-server v2.15.2: every request timed out, every time). Creating a stream that
// exists with the same configuration succeeds. Under load a create racing another
// region's can still go unanswered now and then: callers retry with a deadline
// (serve's awaitStreams).
func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := js.CreateStream(ctx, cfg)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return js.UpdateStream(ctx, cfg)
	}
	return s, err
}

// ensureKeyValue is ensureStream for a key-value bucket.
func ensureKeyValue(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.CreateKeyValue(ctx, cfg)
	if errors.Is(err, jetstream.ErrBucketExists) {
		return js.UpdateKeyValue(ctx, cfg)
	}
	return kv, err
}
