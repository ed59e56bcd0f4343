package natslog

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/internal/subject"
)

var _ dispatch.RideLog = (*RideLog)(nil)

// RideStream is the JetStream stream of ride changes; one subject per ride,
// understudy.rides.<region>.<ride> (each id one token, see subject.Token), holding
// that ride's recent history. Regions that share a NATS deployment share the stream
// and read only their own subjects.
const RideStream = "UNDERSTUDY_RIDES"

const ridePrefix = "understudy.rides."

// RideLog is the durable log of ride changes on JetStream.
type RideLog struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	prefix string // understudy.rides.<region>.
	// FetchWait bounds how long Latest waits for a batch it knows is coming.
	FetchWait time.Duration
}

// OpenRideLog creates or updates the ride stream and returns region's log in it.
func OpenRideLog(ctx context.Context, nc *nats.Conn, region string, replicas int) (*RideLog, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	stream, err := ensureStream(ctx, js, jetstream.StreamConfig{
		Name:              RideStream,
		Description:       "Every change of every ride, except transient offers; the last per subject is the ride now.",
		Subjects:          []string{ridePrefix + ">"},
		Storage:           jetstream.FileStorage,
		Replicas:          max(1, replicas),
		MaxMsgsPerSubject: 32,                  // a ride's whole life, with room for cascades
		MaxAge:            30 * 24 * time.Hour, // far longer than any outage
	})
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", RideStream, err)
	}
	return &RideLog{js: js, stream: stream, prefix: ridePrefix + subject.Token(region) + ".", FetchWait: 5 * time.Second}, nil
}

// Append implements dispatch.RideLog: it returns once JetStream has stored every ride.
func (l *RideLog) Append(ctx context.Context, rides []dispatch.Ride) error {
	futures := make([]jetstream.PubAckFuture, 0, len(rides))
	for _, r := range rides {
		body, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("encode ride %s: %w", r.ID, err)
		}
		id := subject.Token(r.ID)
		f, err := l.js.PublishAsync(l.prefix+id, body, jetstream.WithMsgID(fmt.Sprintf("%s/%d", id, r.Version)))
		if err != nil {
			return fmt.Errorf("log ride %s: %w", r.ID, err)
		}
		futures = append(futures, f)
	}
	for i, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("log ride %s: %w", rides[i].ID, err)
		case <-ctx.Done():
			return fmt.Errorf("log ride %s: %w", rides[i].ID, ctx.Err())
		}
	}
	return nil
}

// Latest implements dispatch.RideLog, for this log's region only.
func (l *RideLog) Latest(ctx context.Context, fn func(dispatch.Ride) error) error {
	cfg := jetstream.OrderedConsumerConfig{
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
		FilterSubjects: []string{l.prefix + "*"},
	}
	err := readAll(ctx, l.stream, cfg, l.FetchWait, func(data []byte, seq uint64) error {
		var r dispatch.Ride
		if err := json.Unmarshal(data, &r); err != nil {
			return fmt.Errorf("decode entry %d: %w", seq, err)
		}
		return fn(r)
	})
	if err != nil {
		return fmt.Errorf("read ride log: %w", err)
	}
	return nil
}
