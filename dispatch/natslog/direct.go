package natslog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// directBatch is how many messages one batched direct get asks for, and
// directMaxBytes how many bytes of them at most.
const (
	directBatch    = 256
	directMaxBytes = 1 << 20
)

// directGetRequest is the body of a JetStream direct get ($JS.API.DIRECT.GET.<stream>).
type directGetRequest struct {
	Seq           uint64     `json:"seq,omitempty"`
	NextBySubject string     `json:"next_by_subj,omitempty"`
	Batch         int        `json:"batch,omitempty"`
	MaxBytes      int        `json:"max_bytes,omitempty"`
	StartTime     *time.Time `json:"start_time,omitempty"`
}

// readDirect delivers to fn, in stream order and with their stream sequences, the
// messages of stream on subjects matching filter, from the first one stored at or
// after since (from the beginning for the zero time).
//
// It uses JetStream's batched direct get (nats-server 2.11 or later, on a stream with
// allow_direct): the stream's server answers each batch from the stream itself and
// keeps nothing for the reader between batches. So a read creates no consumer and no
// other server-side state, however many run at once and however they end (a client
// that hangs up mid-read costs the server nothing after the batch in flight). wait
// bounds the wait for one batch.
func readDirect(ctx context.Context, nc *nats.Conn, stream, filter string, since time.Time, wait time.Duration,
	fn func(data []byte, seq uint64) error) error {
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return fmt.Errorf("direct get: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	req := directGetRequest{NextBySubject: filter, Batch: directBatch, MaxBytes: directMaxBytes, Seq: 1}
	if !since.IsZero() {
		start := since.UTC()
		req.Seq, req.StartTime = 0, &start
	}
	subject := "$JS.API.DIRECT.GET." + stream
	for {
		body, err := json.Marshal(req)
		if err != nil {
			return fmt.Errorf("direct get: %w", err)
		}
		if err := nc.PublishRequest(subject, inbox, body); err != nil {
			return fmt.Errorf("direct get from %s: %w", stream, err)
		}
		last, more, err := readBatch(ctx, sub, stream, wait, fn)
		if err != nil || !more {
			return err
		}
		req.Seq, req.StartTime = last+1, nil
	}
}

// readBatch reads one direct get batch from sub, up to its end-of-batch marker. It
// returns the last sequence delivered and whether the stream holds more matching
// messages after it.
func readBatch(ctx context.Context, sub *nats.Subscription, stream string, wait time.Duration,
	fn func(data []byte, seq uint64) error) (last uint64, more bool, err error) {
	bctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		msg, err := sub.NextMsgWithContext(bctx)
		if err != nil {
			if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
				err = fmt.Errorf("no answer within %s", wait)
			}
			return 0, false, fmt.Errorf("direct get from %s: %w", stream, err)
		}
		switch status := msg.Header.Get("Status"); status {
		case "":
			if msg.Header.Get("Nats-Num-Pending") == "" {
				// Servers before 2.11 answer one message and ignore the batch.
				return 0, false, fmt.Errorf("direct get from %s: the server does not batch (needs nats-server 2.11 or later)", stream)
			}
			seq, err := strconv.ParseUint(msg.Header.Get("Nats-Sequence"), 10, 64)
			if err != nil {
				return 0, false, fmt.Errorf("direct get from %s: bad sequence header: %w", stream, err)
			}
			if err := fn(msg.Data, seq); err != nil {
				return 0, false, err
			}
			last = seq
		case "204": // end of batch
			pending, err := strconv.ParseUint(msg.Header.Get("Nats-Num-Pending"), 10, 64)
			if err != nil {
				return 0, false, fmt.Errorf("direct get from %s: bad pending header: %w", stream, err)
			}
			return last, pending > 0 && last > 0, nil
		case "404": // nothing (more) matches
			return last, false, nil
		case "503":
			return 0, false, fmt.Errorf("direct get from %s: no responders (is allow_direct set on the stream?)", stream)
		default:
			return 0, false, fmt.Errorf("direct get from %s: status %s %s", stream, status, msg.Header.Get("Description"))
		}
	}
}
