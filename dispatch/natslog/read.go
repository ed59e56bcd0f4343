package natslog

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// attemptTimeout bounds one request of a read that is retried until its context ends.
const attemptTimeout = time.Second

// readAll delivers every message that cfg selects from stream, in stream order, to fn
// with its stream sequence, and returns when the last one announced at the start has
// been delivered. wait bounds the wait for a batch known to be coming.
func readAll(ctx context.Context, stream jetstream.Stream, cfg jetstream.OrderedConsumerConfig, wait time.Duration,
	fn func(data []byte, seq uint64) error) error {
	var cons jetstream.Consumer
	var info *jetstream.ConsumerInfo
	for {
		// A request sent while the cluster has no leader to answer it is never
		// answered, even once one is elected: each attempt gets a second, and the
		// next is sent, until ctx ends.
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		var err error
		if cons, err = stream.OrderedConsumer(actx, cfg); err == nil {
			info, err = cons.Info(actx)
		}
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return err
		}
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
