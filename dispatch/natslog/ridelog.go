package natslog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/internal/subject"
)

var _ dispatch.RideLog = (*RideLog)(nil)

// RideStream is the JetStream stream of ride changes; one subject per ride, holding
// that ride's recent history (each id one token, see subject.Token):
//
//   - understudy.rides.<region>.<ride> for a ride without an area (one region, no
//     deployment file), read back by that region only;
//   - understudy.areas.<area>.<ride> for a ride of a deployment's area, written by
//     whichever region holds the area's lease and read back by the next one to take
//     it;
//   - understudy.fences.<area>, the area's fence: the region that takes an area's
//     lease writes it first, and every ride write of the area expects the fence's
//     last sequence to be the one its writer wrote, so a region that lost the lease
//     (however sure its clock is that it has not) has its writes refused by the log.
const RideStream = "UNDERSTUDY_RIDES"

const (
	ridePrefix  = "understudy.rides."
	areaPrefix  = "understudy.areas."
	fencePrefix = "understudy.fences."
)

// Fences gives the sequence of an area's fence that this region wrote when it took
// the area's lease; ok is false while it holds no valid lease of the area.
type Fences interface {
	Fence(area string) (seq uint64, ok bool)
}

// FenceSubject is the subject of area's fence in RideStream.
func FenceSubject(area string) string { return fencePrefix + subject.Token(area) }

// RideLog is the durable log of ride changes on JetStream.
type RideLog struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	prefix string // understudy.rides.<region>.
	// FetchWait bounds how long Latest waits for a batch it knows is coming.
	FetchWait time.Duration
	// Fences, when set, fences every write of a ride with an area (see RideStream);
	// nil writes them unfenced (tests of the log alone).
	Fences Fences
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
		Subjects:          []string{ridePrefix + ">", areaPrefix + ">", fencePrefix + ">"},
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

// appendTimeout bounds an append: a cluster without a quorum (two regions of three
// lost) stores nothing, and the caller hears so rather than wait for its own deadline.
const appendTimeout = 5 * time.Second

// Append implements dispatch.RideLog: it returns once JetStream has stored every ride.
// A write the area's fence refuses is dispatch.ErrFenced.
func (l *RideLog) Append(ctx context.Context, rides []dispatch.Ride) (err error) {
	defer func() { err = tooSlow(err, "the ride log") }()
	ctx, cancel := context.WithTimeout(ctx, appendTimeout)
	defer cancel()
	type pending struct {
		subj string
		body []byte
		opts []jetstream.PublishOpt
		f    jetstream.PubAckFuture
	}
	sent := make([]pending, 0, len(rides))
	for _, r := range rides {
		body, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("encode ride %s: %w", r.ID, err)
		}
		id := subject.Token(r.ID)
		p := pending{subj: l.prefix + id, body: body, opts: []jetstream.PublishOpt{jetstream.WithMsgID(fmt.Sprintf("%s/%d", id, r.Version))}}
		if r.Area != "" {
			p.subj = areaPrefix + subject.Token(r.Area) + "." + id
			if l.Fences != nil {
				seq, ok := l.Fences.Fence(r.Area)
				if !ok {
					return dispatch.Errorf(dispatch.ECodeNoLease, "log ride %s: this region holds no lease of area %s now", r.ID, r.Area)
				}
				p.opts = append(p.opts, jetstream.WithExpectLastSequenceForSubject(seq, FenceSubject(r.Area)))
			}
		}
		if p.f, err = l.js.PublishAsync(p.subj, p.body, p.opts...); err != nil {
			return fmt.Errorf("log ride %s: %w", r.ID, err)
		}
		sent = append(sent, p)
	}
	for i := range sent {
		p := &sent[i]
		for attempt := 0; ; attempt++ {
			var err error
			select {
			case <-p.f.Ok():
			case err = <-p.f.Err():
			case <-ctx.Done():
				return fmt.Errorf("log ride %s: %w", rides[i].ID, ctx.Err())
			}
			switch {
			case err == nil:
			case isFenceBusy(err):
				// Another write checking the same fence was in flight: the servers
				// refuse a second one until the first is stored. Not a fence that
				// moved on; send it again shortly (its message id keeps it once).
				select {
				case <-time.After(fenceBusyBackoff(attempt)):
				case <-ctx.Done():
					return fmt.Errorf("log ride %s: %w", rides[i].ID, ctx.Err())
				}
				if p.f, err = l.js.PublishAsync(p.subj, p.body, p.opts...); err != nil {
					return fmt.Errorf("log ride %s: %w", rides[i].ID, err)
				}
				continue
			case isWrongLastSequence(err):
				return &dispatch.Error{Code: dispatch.ECodeNoLease, Err: dispatch.ErrFenced,
					Message: fmt.Sprintf("log ride %s: the fence of area %s has moved on: %s", rides[i].ID, rides[i].Area, dispatch.ErrFenced.Message)}
			default:
				return fmt.Errorf("log ride %s: %w", rides[i].ID, err)
			}
			break
		}
	}
	return nil
}

// isFenceBusy says whether err is the servers' refusal of a message whose expected
// last sequence could not be checked because another message checking the same
// subject was still in flight (a replicated stream allows one at a time): "wrong
// last sequence" without the sequence found, unlike a real mismatch.
func isFenceBusy(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}

// fenceBusyBackoff is the wait before sending again a write isFenceBusy refused: a
// few milliseconds, growing to 50, with jitter so that writers do not collide again.
func fenceBusyBackoff(attempt int) time.Duration {
	d := time.Millisecond << min(attempt, 5)
	return min(d, 50*time.Millisecond)/2 + rand.N(min(d, 50*time.Millisecond))
}

// Latest implements dispatch.RideLog, for this log's region only.
func (l *RideLog) Latest(ctx context.Context, fn func(dispatch.Ride) error) error {
	return l.latest(ctx, l.prefix+"*", fn)
}

// LatestIn implements dispatch.RideLog.
func (l *RideLog) LatestIn(ctx context.Context, area string, fn func(dispatch.Ride) error) error {
	return l.latest(ctx, areaPrefix+subject.Token(area)+".*", fn)
}

func (l *RideLog) latest(ctx context.Context, filter string, fn func(dispatch.Ride) error) error {
	cfg := jetstream.OrderedConsumerConfig{
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
		FilterSubjects: []string{filter},
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

// WriteFence writes area's fence (see RideStream), over the last one written, and
// returns its sequence: from now on only writes that expect it reach the log.
func (l *RideLog) WriteFence(ctx context.Context, area, region string, epoch uint64) (uint64, error) {
	subj := FenceSubject(area)
	body, _ := json.Marshal(struct {
		Region string `json:"region"`
		Epoch  uint64 `json:"epoch"`
	}{region, epoch}) // strings and a number always encode
	for attempt := 0; ; attempt++ {
		var last uint64
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		msg, err := l.stream.GetLastMsgForSubject(actx, subj)
		cancel()
		switch {
		case err == nil:
			last = msg.Sequence
		case errors.Is(err, jetstream.ErrMsgNotFound):
		case ctx.Err() != nil:
			return 0, fmt.Errorf("read the fence of area %s: %w", area, err)
		default:
			continue // no leader to answer yet: ask again
		}
		actx, cancel = context.WithTimeout(ctx, attemptTimeout)
		ack, err := l.js.Publish(actx, subj, body, jetstream.WithExpectLastSequencePerSubject(last))
		cancel()
		if err == nil {
			return ack.Sequence, nil
		}
		if ctx.Err() != nil || attempt >= 20 {
			return 0, fmt.Errorf("write the fence of area %s: %w", area, err)
		}
		// A publish that timed out may have been stored: the next read tells.
	}
}
