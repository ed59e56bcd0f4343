package natslog

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
)

// Connect opens a connection to the NATS server or cluster at url (URLs separated by
// commas) that reconnects forever with a jittered backoff of up to MaxReconnectDelay
// if it drops, buffering what is published meanwhile; opts come after those defaults
// (add nats.RetryOnFailedConnect(true) to keep trying when no server answers yet).
func Connect(url string, opts ...nats.Option) (*nats.Conn, error) {
	nc, err := nats.Connect(url, append([]nats.Option{reconnectForever(), nats.Timeout(5 * time.Second)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w", url, err)
	}
	return nc, nil
}

// MaxReconnectDelay bounds the pause between two rounds of reconnect attempts.
const MaxReconnectDelay = 2 * time.Second

// reconnectForever is the reconnect policy of every connection Understudy makes:
// never give up, back off from 50 ms to MaxReconnectDelay, with jitter so that the
// replicas of a deployment do not all knock at once.
func reconnectForever() nats.Option {
	return func(o *nats.Options) error {
		o.Name = "understudy"
		o.AllowReconnect = true
		o.MaxReconnect = -1
		o.CustomReconnectDelayCB = reconnectDelay
		return nil
	}
}

// reconnectDelay is the pause after the attempts-th round of reconnect attempts.
func reconnectDelay(attempts int) time.Duration {
	d := MaxReconnectDelay
	if attempts < 6 {
		d = min(d, 50*time.Millisecond<<max(attempts-1, 0))
	}
	return d/2 + rand.N(d/2+1) // jitter: between half and all of d
}

// Logged returns an option that logs the connection's disconnects, reconnects, async
// errors (such as a slow consumer) and close to log.
func Logged(log *slog.Logger) nats.Option {
	return func(o *nats.Options) error {
		o.DisconnectedErrCB = func(nc *nats.Conn, err error) {
			log.Warn("nats disconnected: reconnecting", slog.String("url", nc.ConnectedUrlRedacted()), slog.Any("err", err))
		}
		o.ReconnectedCB = func(nc *nats.Conn) {
			log.Info("nats reconnected", slog.String("url", nc.ConnectedUrlRedacted()))
		}
		o.ConnectedCB = func(nc *nats.Conn) { // after nats.RetryOnFailedConnect
			log.Info("nats connected", slog.String("url", nc.ConnectedUrlRedacted()))
		}
		o.AsyncErrorCB = func(_ *nats.Conn, sub *nats.Subscription, err error) {
			attrs := []any{slog.Any("err", err)}
			if sub != nil {
				attrs = append(attrs, slog.String("subject", sub.Subject))
			}
			log.Warn("nats error", attrs...)
		}
		o.ClosedCB = func(nc *nats.Conn) {
			log.Info("nats connection closed", slog.Any("err", nc.LastError()))
		}
		return nil
	}
}
