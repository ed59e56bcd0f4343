package natslog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/internal/subject"
)

var _ dispatch.Ledger = (*Ledger)(nil)

// LedgerStream is the JetStream stream that holds the ledger; one subject per ride,
// understudy.ledger.<driver>.<ride>, each id one token (see subject.Token), holding
// the ride's one entry (a trip or a cancellation fee).
const LedgerStream = "UNDERSTUDY_LEDGER"

const ledgerPrefix = "understudy.ledger."

// Ledger is the driver pay ledger on JetStream. A ride's entry is published with the
// expectation that its subject holds no message yet, so however often a completion or
// cancel is retried, from however many replicas, the stream keeps one entry per ride.
//
// Reads are batched direct gets (see readDirect): they leave nothing behind on the
// server, so no number of pay reads can exhaust JetStream.
type Ledger struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	// FetchWait bounds how long Entries waits for the next batch of a read.
	FetchWait time.Duration
}

// OpenLedger creates or updates the ledger stream (file storage, with replicas copies
// in a cluster) and returns the ledger.
func OpenLedger(ctx context.Context, nc *nats.Conn, replicas int) (*Ledger, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	stream, err := ensureStream(ctx, js, jetstream.StreamConfig{
		Name:        LedgerStream,
		Description: "Completed trips, one entry each, for paying drivers after the outage.",
		Subjects:    []string{ledgerPrefix + ">"},
		Storage:     jetstream.FileStorage,
		Replicas:    max(1, replicas),
		Retention:   jetstream.LimitsPolicy, // kept until settled and purged by an operator
		Duplicates:  time.Hour,
		AllowDirect: true, // reads are direct gets: no consumer per read
	})
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", LedgerStream, err)
	}
	return &Ledger{nc: nc, js: js, stream: stream, FetchWait: 5 * time.Second}, nil
}

func entrySubject(driverID, rideID string) string {
	return ledgerPrefix + subject.Token(driverID) + "." + subject.Token(rideID)
}

// Record implements dispatch.Ledger.
func (l *Ledger) Record(ctx context.Context, e dispatch.LedgerEntry) (dispatch.LedgerEntry, error) {
	if e.RideID == "" || e.DriverID == "" {
		return dispatch.LedgerEntry{}, errors.New("ledger entry needs a ride and a driver")
	}
	e.Seq = 0
	if e.Kind == "" {
		e.Kind = dispatch.EntryTrip
	}
	body, err := json.Marshal(e)
	if err != nil {
		return dispatch.LedgerEntry{}, fmt.Errorf("encode ledger entry: %w", err)
	}
	subj := entrySubject(e.DriverID, e.RideID)
	ack, err := l.publishEntry(ctx, subj, body, e.RideID)
	switch {
	case err == nil && !ack.Duplicate:
		e.Seq = ack.Sequence
		return e, nil
	case err == nil, errors.Is(err, jetstream.ErrKeyExists), isWrongLastSequence(err):
		// Recorded before: answer with what is stored. The stream said the entry is
		// there; a replica that has not applied it yet may answer the read (a direct
		// get) with nothing, so a miss is read again, a few times.
		stored, err := l.stored(ctx, subj)
		for miss := 0; errors.Is(err, dispatch.ErrNoLedgerEntry) && miss < staleReadTries; miss++ {
			select {
			case <-ctx.Done():
				return dispatch.LedgerEntry{}, tooSlow(ctx.Err(), "the ledger")
			case <-time.After(staleReadPause):
			}
			stored, err = l.stored(ctx, subj)
		}
		return stored, tooSlow(err, "the ledger")
	}
	return dispatch.LedgerEntry{}, tooSlow(fmt.Errorf("publish ledger entry for %s: %w", e.RideID, err), "the ledger")
}

// A read that a lagging replica answers with nothing, of an entry the stream said
// it holds, is asked again staleReadTries times, staleReadPause apart.
const (
	staleReadTries = 20
	staleReadPause = 50 * time.Millisecond
)

// publishEntry publishes a ledger entry and returns the first answer any of its sends
// gets. It sends again every attemptTimeout while none has come (while the ledger's
// leader is being elected, its region lost, a publish gets no answer and the next one
// may), but keeps waiting for the earlier sends too: under load an answer can take
// longer than attemptTimeout, and a send given up on at attemptTimeout would never
// be answered in time however often it is retried (each retry waits behind the last).
// A resend cannot record the trip twice (the message id, and the subject's expected
// last sequence 0).
func (l *Ledger) publishEntry(ctx context.Context, subj string, body []byte, rideID string) (*jetstream.PubAck, error) {
	type answer struct {
		ack *jetstream.PubAck
		err error
	}
	answers := make(chan answer, 64)
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	send := func() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ack, err := l.js.Publish(ctx, subj, body,
				jetstream.WithExpectLastSequencePerSubject(0), // only if the trip has no entry yet
				jetstream.WithMsgID("trip-"+subject.Token(rideID)))
			select {
			case answers <- answer{ack, err}:
			case <-ctx.Done():
			}
		}()
	}
	send()
	resend := time.NewTicker(attemptTimeout)
	defer resend.Stop()
	var last error
	for pending := 1; ; {
		select {
		case a := <-answers:
			pending--
			if !noLeader(a.err) {
				return a.ack, a.err
			}
			last = a.err // no responders: nobody to ask now; the next send may find a leader
			if pending == 0 {
				select {
				case <-ctx.Done():
					return nil, ctx.Err()
				case <-time.After(100 * time.Millisecond):
				}
				send()
				pending++
			}
		case <-resend.C:
			send()
			pending++
		case <-ctx.Done():
			if last == nil || errors.Is(ctx.Err(), context.Canceled) {
				last = ctx.Err()
			}
			return nil, last
		}
	}
}

// noLeader reports whether err is a request JetStream did not answer: no stream
// leader right now (an election), or no answer in time.
func noLeader(err error) bool {
	return errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) || timedOut(err)
}

// timedOut reports whether err is a request JetStream did not answer in time.
func timedOut(err error) bool {
	return errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded)
}

func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Entry implements dispatch.Ledger.
func (l *Ledger) Entry(ctx context.Context, driverID, rideID string) (dispatch.LedgerEntry, error) {
	return l.stored(ctx, entrySubject(driverID, rideID))
}

func (l *Ledger) stored(ctx context.Context, subj string) (dispatch.LedgerEntry, error) {
	msg, err := l.stream.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return dispatch.LedgerEntry{}, dispatch.ErrNoLedgerEntry
	}
	if err != nil {
		return dispatch.LedgerEntry{}, fmt.Errorf("read ledger entry %s: %w", subj, err)
	}
	return decodeEntry(msg.Data, msg.Sequence)
}

// decodeEntry decodes the entry stored at seq; entries written before kinds existed
// are trips.
func decodeEntry(data []byte, seq uint64) (dispatch.LedgerEntry, error) {
	var e dispatch.LedgerEntry
	if err := json.Unmarshal(data, &e); err != nil {
		return dispatch.LedgerEntry{}, fmt.Errorf("decode ledger entry %d: %w", seq, err)
	}
	if e.Kind == "" {
		e.Kind = dispatch.EntryTrip
	}
	e.Seq = seq
	return e, nil
}

// Entries implements dispatch.Ledger. It reads from the first entry published at or
// after since (an entry is published after its trip completes, so none is missed) and
// keeps those completed at or after since.
func (l *Ledger) Entries(ctx context.Context, since time.Time, driverID string, fn func(dispatch.LedgerEntry) error) error {
	filter := ledgerPrefix + ">"
	if driverID != "" {
		filter = ledgerPrefix + subject.Token(driverID) + ".*"
	}
	err := readDirect(ctx, l.nc, LedgerStream, filter, since, l.FetchWait, func(data []byte, seq uint64) error {
		e, err := decodeEntry(data, seq)
		if err != nil {
			return err
		}
		if e.CompletedAt.Before(since) {
			return nil
		}
		return fn(e)
	})
	if err != nil {
		return fmt.Errorf("read ledger: %w", err)
	}
	return nil
}
