package natslog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/understudy/understudy/dispatch"
)

var _ dispatch.IdempotencyStore = (*IdempotencyStore)(nil)

// IdempotencyBucket is the JetStream key-value bucket of the rider API's
// Idempotency-Keys, shared by the regions on one NATS (each key names its region).
const IdempotencyBucket = "UNDERSTUDY_IDEMPOTENCY"

// IdempotencyStore keeps Idempotency-Keys in a JetStream key-value bucket, so that
// they outlive the process on the embedded default (file storage in the data
// directory) as they do in Redis. Each change is one compare-and-set on the key's
// revision, so concurrent reservations of one key have exactly one winner.
//
// A record's expiry is kept in the record and checked on every read; the bucket's
// own TTL, the longest any record may live, removes the records themselves.
type IdempotencyStore struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	kv     jetstream.KeyValue
	region string
	ttl    time.Duration

	// held are the reservations this process made and has not completed or
	// released yet, by bucket key: Complete and Release write them by compare-and-set
	// on the revision Reserve got, without reading the key first. A read is a direct
	// get, which a replica may answer before it has applied the reservation (see
	// shared/notes/nats-failover.md): a release that read nothing there would leave
	// the key reserved, and a completion would be refused with its ride created.
	mu   sync.Mutex
	held map[string]reservation
}

// reservation is a key this process reserved: its record and the revision written.
type reservation struct {
	rec dispatch.IdempotencyRecord
	rev uint64
}

// hold records this process's reservation of k.
func (s *IdempotencyStore) hold(k string, rec dispatch.IdempotencyRecord, rev uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held == nil {
		s.held = map[string]reservation{}
	}
	if len(s.held) >= maxHeld { // requests that never finished (a bug): forget the expired
		now := s.now()
		for k, r := range s.held {
			if !now.Before(r.rec.ExpiresAt) {
				delete(s.held, k)
			}
		}
	}
	s.held[k] = reservation{rec, rev}
}

// maxHeld is how many reservations held keeps before it drops expired ones.
const maxHeld = 4096

// take removes and returns this process's live reservation of k with fingerprint.
func (s *IdempotencyStore) take(k, fingerprint string) (reservation, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.held[k]
	delete(s.held, k)
	return r, ok && r.rec.Fingerprint == fingerprint && s.now().Before(r.rec.ExpiresAt)
}

// OpenIdempotencyStore creates or updates the bucket, whose records live at most ttl
// (file storage, with replicas copies in a cluster), and returns region's store in it.
func OpenIdempotencyStore(ctx context.Context, nc *nats.Conn, region string, ttl time.Duration, replicas int) (*IdempotencyStore, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("idempotency bucket TTL %s: want > 0", ttl)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	kv, err := ensureKeyValue(ctx, js, jetstream.KeyValueConfig{
		Bucket:      IdempotencyBucket,
		Description: "Idempotency-Keys of ride requests: which request first used each, and its ride.",
		History:     1,
		TTL:         ttl,
		Storage:     jetstream.FileStorage,
		Replicas:    max(1, replicas),
	})
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", IdempotencyBucket, err)
	}
	return &IdempotencyStore{kv: kv, region: region, ttl: ttl}, nil
}

func (s *IdempotencyStore) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// key is the bucket key of a region, scope and key: a hash, because KV keys allow few
// characters and become subjects, which must stay short whatever a client sends.
func (s *IdempotencyStore) key(scope, key string) string {
	h := sha256.New()
	for _, part := range []string{s.region, scope} {
		h.Write([]byte(strconv.Itoa(len(part)) + ":" + part))
	}
	h.Write([]byte(key))
	return hex.EncodeToString(h.Sum(nil))
}

// idemValue is a record as stored.
type idemValue struct {
	FP      string    `json:"fp"`
	Ride    string    `json:"ride,omitempty"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
}

func encodeRecord(r dispatch.IdempotencyRecord) []byte {
	b, _ := json.Marshal(idemValue{FP: r.Fingerprint, Ride: r.RideID, Created: r.CreatedAt, Expires: r.ExpiresAt}) // strings and times always encode
	return b
}

// get returns the stored record of k, live or expired, and its revision.
func (s *IdempotencyStore) get(ctx context.Context, k string) (dispatch.IdempotencyRecord, uint64, error) {
	e, err := s.kv.Get(ctx, k)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return dispatch.IdempotencyRecord{}, 0, dispatch.ErrIdempotencyKeyNotFound
	}
	if err != nil {
		return dispatch.IdempotencyRecord{}, 0, fmt.Errorf("read idempotency key: %w", err)
	}
	var v idemValue
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return dispatch.IdempotencyRecord{}, 0, fmt.Errorf("decode idempotency record: %w", err)
	}
	return dispatch.IdempotencyRecord{Fingerprint: v.FP, RideID: v.Ride, CreatedAt: v.Created, ExpiresAt: v.Expires}, e.Revision(), nil
}

// unavailable turns a request that what (a bucket, a stream) did not answer (its
// leader being elected after a region was lost, or NATS away) into 503 unavailable
// with Retry-After, which clients retry; other errors pass.
func unavailable(err error, what string) error {
	if err == nil || !noLeader(err) {
		return err
	}
	return retryLater(err, what+" are not answering right now (NATS electing a leader?): retry shortly")
}

// tooSlow is unavailable for a request that what did not answer before the caller's
// deadline (JetStream too loaded to answer in time, or electing a leader): a stream
// that is not there (no responders) stays an internal error.
func tooSlow(err error, what string) error {
	if !timedOut(err) {
		return err
	}
	return retryLater(err, what+" did not answer in time (NATS overloaded, or electing a leader): retry shortly")
}

// retryLater is 503 unavailable with Retry-After 1 for err, unless err has its own
// code already.
func retryLater(err error, msg string) error {
	var de *dispatch.Error
	if errors.As(err, &de) {
		return err
	}
	return &dispatch.Error{Code: dispatch.ECodeUnavailable, RetryAfterS: 1,
		Message: msg, Err: err}
}

// casLost reports whether a write failed because the key changed since it was read.
func casLost(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) ||
		errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// casAttempts bounds the retries of a compare-and-set that keeps losing races.
const casAttempts = 16

var errContended = errors.New("the key kept changing under this request")

func (s *IdempotencyStore) checkTTL(ttl time.Duration) error {
	if ttl <= 0 || ttl > s.ttl {
		return fmt.Errorf("idempotency record TTL %s: want > 0 and at most the bucket's %s", ttl, s.ttl)
	}
	return nil
}

// Reserve implements dispatch.IdempotencyStore.
func (s *IdempotencyStore) Reserve(ctx context.Context, scope, key, fingerprint string, ttl time.Duration) (_ dispatch.IdempotencyRecord, _ bool, err error) {
	defer func() { err = unavailable(err, "idempotency keys") }()
	if err := s.checkTTL(ttl); err != nil {
		return dispatch.IdempotencyRecord{}, false, err
	}
	k := s.key(scope, key)
	for range casAttempts {
		now := s.now()
		fresh := dispatch.IdempotencyRecord{Fingerprint: fingerprint, CreatedAt: now, ExpiresAt: now.Add(ttl)}
		rev, err := s.kv.Create(ctx, k, encodeRecord(fresh))
		if err == nil {
			s.hold(k, fresh, rev)
			return fresh, true, nil
		}
		if !casLost(err) {
			return dispatch.IdempotencyRecord{}, false, fmt.Errorf("reserve idempotency key: %w", err)
		}
		cur, rev, err := s.get(ctx, k)
		switch {
		case errors.Is(err, dispatch.ErrIdempotencyKeyNotFound):
			continue // released or gone since: try again
		case err != nil:
			return dispatch.IdempotencyRecord{}, false, err
		case s.now().Before(cur.ExpiresAt):
			return cur, false, nil
		}
		// Expired but not yet removed: take it over, unless someone else does first.
		if rev, err := s.kv.Update(ctx, k, encodeRecord(fresh), rev); err == nil {
			s.hold(k, fresh, rev)
			return fresh, true, nil
		} else if !casLost(err) {
			return dispatch.IdempotencyRecord{}, false, fmt.Errorf("reserve expired idempotency key: %w", err)
		}
	}
	return dispatch.IdempotencyRecord{}, false, fmt.Errorf("reserve idempotency key: %w", errContended)
}

// Complete implements dispatch.IdempotencyStore.
func (s *IdempotencyStore) Complete(ctx context.Context, scope, key, fingerprint, rideID string, ttl time.Duration) (err error) {
	defer func() { err = unavailable(err, "idempotency keys") }()
	if err := s.checkTTL(ttl); err != nil {
		return err
	}
	k := s.key(scope, key)
	if r, ok := s.take(k, fingerprint); ok {
		cur := r.rec
		cur.RideID, cur.ExpiresAt = rideID, s.now().Add(ttl)
		switch _, err := s.kv.Update(ctx, k, encodeRecord(cur), r.rev); {
		case err == nil:
			return nil
		case !casLost(err):
			s.hold(k, r.rec, r.rev) // still ours: a retry writes it the same way
			return fmt.Errorf("complete idempotency key: %w", err)
		}
		// Changed since (taken over after it expired): read it, as below.
	}
	for range casAttempts {
		cur, rev, err := s.get(ctx, k)
		if errors.Is(err, dispatch.ErrIdempotencyKeyNotFound) {
			return dispatch.ErrIdempotencyNotReserved
		}
		if err != nil {
			return err
		}
		now := s.now()
		if !now.Before(cur.ExpiresAt) || cur.Done() || cur.Fingerprint != fingerprint {
			return dispatch.ErrIdempotencyNotReserved
		}
		cur.RideID, cur.ExpiresAt = rideID, now.Add(ttl)
		if _, err := s.kv.Update(ctx, k, encodeRecord(cur), rev); err == nil {
			return nil
		} else if !casLost(err) {
			return fmt.Errorf("complete idempotency key: %w", err)
		}
	}
	return fmt.Errorf("complete idempotency key: %w", errContended)
}

// Release implements dispatch.IdempotencyStore.
func (s *IdempotencyStore) Release(ctx context.Context, scope, key, fingerprint string) (err error) {
	defer func() { err = unavailable(err, "idempotency keys") }()
	k := s.key(scope, key)
	if r, ok := s.take(k, fingerprint); ok {
		switch err := s.kv.Delete(ctx, k, jetstream.LastRevision(r.rev)); {
		case err == nil:
			return nil
		case !casLost(err):
			s.hold(k, r.rec, r.rev) // still ours: a retry deletes it the same way
			return fmt.Errorf("release idempotency key: %w", err)
		}
		// Changed since (taken over after it expired): read it, as below.
	}
	for range casAttempts {
		cur, rev, err := s.get(ctx, k)
		if errors.Is(err, dispatch.ErrIdempotencyKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if cur.Done() || cur.Fingerprint != fingerprint {
			return nil
		}
		if err := s.kv.Delete(ctx, k, jetstream.LastRevision(rev)); err == nil {
			return nil
		} else if !casLost(err) {
			return fmt.Errorf("release idempotency key: %w", err)
		}
	}
	return fmt.Errorf("release idempotency key: %w", errContended)
}

// Lookup implements dispatch.IdempotencyStore.
func (s *IdempotencyStore) Lookup(ctx context.Context, scope, key string) (_ dispatch.IdempotencyRecord, err error) {
	defer func() { err = unavailable(err, "idempotency keys") }()
	rec, _, err := s.get(ctx, s.key(scope, key))
	if err != nil {
		return dispatch.IdempotencyRecord{}, err
	}
	if !s.now().Before(rec.ExpiresAt) {
		return dispatch.IdempotencyRecord{}, dispatch.ErrIdempotencyKeyNotFound
	}
	return rec, nil
}
