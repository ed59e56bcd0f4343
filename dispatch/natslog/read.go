package natslog

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// readAll delivers every message that cfg selects from stream, in stream order, to fn
// with its stream sequence, and returns when the last one announced at the start has
// been delivered. wait bounds the wait for a batch known to be coming.
func readAll(ctx context.Context, stream jetstream.Stream, cfg jetstream.OrderedConsumerConfig, wait time.Duration,
	fn func(data []byte, seq uint64) error) error {
	cons, err := stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return err
	}
	for pending := info.NumPending; pending > 0; {
		batch, err := cons.Fetch(int(min(pending, 256)), jetstream.FetchMaxWait(wait))
		if err != nil {
			return err
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			meta, err := msg.Metadata()
			if err != nil {
				return err
			}
			pending = meta.NumPending
			if err := fn(msg.Data(), meta.Sequence.Stream); err != nil {
				return err
			}
		}
		if err := batch.Error(); err != nil {
			return err
		}
		if got == 0 {
			return fmt.Errorf("%d messages announced but none arrived within %s", pending, wait)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}
