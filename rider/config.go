package rider

import (
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/understudy/understudy/dispatch"
)

// Config tunes the API. Start from DefaultConfig. Each setting but StreamWriteTimeout
// has a name (RegisterFlags) that is also its flag, environment variable and
// config-file key in `understudy serve`, and that Validate's errors use.
type Config struct {
	// MaxBodyBytes is the largest request body accepted; larger ones get 413.
	MaxBodyBytes int64
	// IdempotencyTTL is how long an Idempotency-Key is remembered after its ride was
	// created.
	IdempotencyTTL time.Duration
	// PendingTTL is how long a key stays reserved by a request that is still creating
	// its ride (bounds the damage of a process dying mid-request).
	PendingTTL time.Duration
	// InFlightWait is how long a duplicate request waits for the first request with
	// the same key to finish before it answers 409.
	InFlightWait time.Duration
	// Heartbeat is the interval of comment lines on idle event streams.
	Heartbeat time.Duration
	// LocationInterval is how often an event stream of a ride with a driver on the
	// way or on board looks for a new driver position and, if there is one, sends it
	// as a location event: at most one per interval, read from the Store.
	LocationInterval time.Duration
	// StreamWriteTimeout bounds each write of an event stream: a write that waits
	// longer (the client stopped reading) ends the stream, which otherwise lasts as
	// long as the ride. It is not a setting of its own: a server sets it to the write
	// timeout of its HTTP server.
	StreamWriteTimeout time.Duration
	// SubscriberBuffer is how many undelivered ride changes an event stream holds;
	// past that the oldest are dropped (the newest state always gets through).
	SubscriberBuffer int
	// MaxStreamsPerRider caps a rider's concurrent event streams.
	MaxStreamsPerRider int
	// Rate is each rider's sustained request rate per second, Burst its bucket size.
	Rate  float64
	Burst int
	// SweepInterval is how often the API frees expired rate limiters and idempotency keys.
	SweepInterval time.Duration
}

// DefaultConfig returns the defaults docs/rider-api.md describes.
func DefaultConfig() Config {
	return Config{
		MaxBodyBytes:       16 << 10,
		IdempotencyTTL:     24 * time.Hour,
		PendingTTL:         time.Minute,
		InFlightWait:       5 * time.Second,
		Heartbeat:          15 * time.Second,
		LocationInterval:   5 * time.Second,
		StreamWriteTimeout: 30 * time.Second,
		SubscriberBuffer:   16,
		MaxStreamsPerRider: 8,
		Rate:               10,
		Burst:              30,
		SweepInterval:      time.Minute,
	}
}

// RegisterFlags declares each setting on fs under its name, with c's values as the
// defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.Int64Var(&c.MaxBodyBytes, "max-body-bytes", c.MaxBodyBytes, "largest request body accepted, in `bytes` (413 beyond; at least 256)")
	fs.DurationVar(&c.IdempotencyTTL, "idempotency-ttl", c.IdempotencyTTL, "how long Idempotency-Keys are remembered")
	fs.DurationVar(&c.PendingTTL, "idempotency-pending-ttl", c.PendingTTL, "how long a key stays reserved by a request still creating its ride")
	fs.DurationVar(&c.InFlightWait, "idempotency-wait", c.InFlightWait, "how long a duplicate request waits for the first with its key before 409")
	fs.DurationVar(&c.Heartbeat, "sse-heartbeat", c.Heartbeat, "event stream heartbeat interval")
	fs.DurationVar(&c.LocationInterval, "sse-location-interval", c.LocationInterval, "how often event streams send a moved driver's position")
	fs.IntVar(&c.SubscriberBuffer, "sse-buffer", c.SubscriberBuffer, "ride changes an event stream holds for a slow reader (the oldest are dropped)")
	fs.IntVar(&c.MaxStreamsPerRider, "sse-max-streams", c.MaxStreamsPerRider, "concurrent event streams per rider")
	fs.Float64Var(&c.Rate, "rider-rate", c.Rate, "requests per second per caller, on every route that takes a token")
	fs.IntVar(&c.Burst, "rider-burst", c.Burst, "burst of requests per caller")
	fs.DurationVar(&c.SweepInterval, "rider-sweep-interval", c.SweepInterval, "how often expired in-process rate limits and keys are freed")
}

// Validate reports every setting out of range, by name.
func (c Config) Validate() error {
	errs := dispatch.PositiveDurations(
		dispatch.Duration{Name: "idempotency-ttl", Value: c.IdempotencyTTL},
		dispatch.Duration{Name: "idempotency-pending-ttl", Value: c.PendingTTL},
		dispatch.Duration{Name: "sse-heartbeat", Value: c.Heartbeat},
		dispatch.Duration{Name: "sse-location-interval", Value: c.LocationInterval},
		dispatch.Duration{Name: "rider StreamWriteTimeout", Value: c.StreamWriteTimeout},
		dispatch.Duration{Name: "rider-sweep-interval", Value: c.SweepInterval},
	)
	if c.MaxBodyBytes < 256 {
		errs = append(errs, fmt.Errorf("max-body-bytes %d: want >= 256", c.MaxBodyBytes))
	}
	if c.InFlightWait < 0 {
		errs = append(errs, fmt.Errorf("idempotency-wait %s: want >= 0", c.InFlightWait))
	}
	if c.SubscriberBuffer < 1 {
		errs = append(errs, fmt.Errorf("sse-buffer %d: want >= 1", c.SubscriberBuffer))
	}
	if c.MaxStreamsPerRider < 1 {
		errs = append(errs, fmt.Errorf("sse-max-streams %d: want >= 1", c.MaxStreamsPerRider))
	}
	if !(c.Rate > 0) {
		errs = append(errs, fmt.Errorf("rider-rate %v: want > 0", c.Rate))
	}
	if c.Burst < 1 {
		errs = append(errs, fmt.Errorf("rider-burst %d: want >= 1", c.Burst))
	}
	return errors.Join(errs...)
}
