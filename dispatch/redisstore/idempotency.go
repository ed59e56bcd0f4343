package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/understudy/understudy/dispatch"
)

var _ dispatch.IdempotencyStore = (*IdempotencyStore)(nil)

// IdempotencyStore keeps Idempotency-Keys in Redis, one string per key with Redis
// expiry, so every replica of a region sees the same keys. Each change is one script.
type IdempotencyStore struct {
	client redis.UniversalClient
	prefix string
}

// NewIdempotencyStore returns the idempotency store of the Store's Redis and prefix.
func (s *Store) NewIdempotencyStore() *IdempotencyStore {
	return &IdempotencyStore{client: s.client, prefix: s.prefix}
}

// idemRecord is a key's record as stored; field names are short because the scripts
// read them.
type idemRecord struct {
	FP      string `json:"fp"`
	Ride    string `json:"ride"`
	Created int64  `json:"created,string"` // unix ns, as a string: cjson would round a number
	Expires int64  `json:"expires,string"` // unix ns, as a string
}

func (r idemRecord) public() dispatch.IdempotencyRecord {
	return dispatch.IdempotencyRecord{Fingerprint: r.FP, RideID: r.Ride,
		CreatedAt: time.Unix(0, r.Created).UTC(), ExpiresAt: time.Unix(0, r.Expires).UTC()}
}

// key is unambiguous whatever the scope and key contain: the scope is length-prefixed.
func (s *IdempotencyStore) key(scope, key string) string {
	return s.prefix + "idem:" + strconv.Itoa(len(scope)) + ":" + scope + ":" + key
}

var reserveScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur then return {cur, 0} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {ARGV[1], 1}
`)

// Reserve implements dispatch.IdempotencyStore.
func (s *IdempotencyStore) Reserve(ctx context.Context, scope, key, fingerprint string, ttl time.Duration) (dispatch.IdempotencyRecord, bool, error) {
	now := time.Now()
	rec := idemRecord{FP: fingerprint, Created: now.UnixNano(), Expires: now.Add(ttl).UnixNano()}
	body, _ := json.Marshal(rec) // strings and numbers always encode
	res, err := reserveScript.Run(ctx, s.client, []string{s.key(scope, key)}, body, max(1, ttl.Milliseconds())).Slice()
	if err != nil {
		return dispatch.IdempotencyRecord{}, false, fmt.Errorf("redis reserve idempotency key: %w", err)
	}
	var stored idemRecord
	if len(res) != 2 {
		return dispatch.IdempotencyRecord{}, false, fmt.Errorf("redis reserve idempotency key: unexpected answer %v", res)
	}
	if err := json.Unmarshal([]byte(fmt.Sprint(res[0])), &stored); err != nil {
		return dispatch.IdempotencyRecord{}, false, fmt.Errorf("decode idempotency record: %w", err)
	}
	return stored.public(), res[1] == int64(1), nil
}

var completeScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local rec = cjson.decode(cur)
if rec.fp ~= ARGV[1] or rec.ride ~= '' then return 0 end
rec.ride = ARGV[2]
rec.expires = ARGV[4]
redis.call('SET', KEYS[1], cjson.encode(rec), 'PX', ARGV[3])
return 1
`)

// Complete implements dispatch.IdempotencyStore.
func (s *IdempotencyStore) Complete(ctx context.Context, scope, key, fingerprint, rideID string, ttl time.Duration) error {
	expires := time.Now().Add(ttl).UnixNano()
	n, err := completeScript.Run(ctx, s.client, []string{s.key(scope, key)}, fingerprint, rideID,
		max(1, ttl.Milliseconds()), strconv.FormatInt(expires, 10)).Int()
	if err != nil {
		return fmt.Errorf("redis complete idempotency key: %w", err)
	}
	if n == 0 {
		return dispatch.ErrIdempotencyNotReserved
	}
	return nil
}

var releaseScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local rec = cjson.decode(cur)
if rec.fp ~= ARGV[1] or rec.ride ~= '' then return 0 end
return redis.call('DEL', KEYS[1])
`)

// Release implements dispatch.IdempotencyStore.
func (s *IdempotencyStore) Release(ctx context.Context, scope, key, fingerprint string) error {
	if err := releaseScript.Run(ctx, s.client, []string{s.key(scope, key)}, fingerprint).Err(); err != nil {
		return fmt.Errorf("redis release idempotency key: %w", err)
	}
	return nil
}

// Lookup implements dispatch.IdempotencyStore.
func (s *IdempotencyStore) Lookup(ctx context.Context, scope, key string) (dispatch.IdempotencyRecord, error) {
	b, err := s.client.Get(ctx, s.key(scope, key)).Bytes()
	if errors.Is(err, redis.Nil) {
		return dispatch.IdempotencyRecord{}, dispatch.ErrIdempotencyKeyNotFound
	}
	if err != nil {
		return dispatch.IdempotencyRecord{}, fmt.Errorf("redis lookup idempotency key: %w", err)
	}
	var rec idemRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return dispatch.IdempotencyRecord{}, fmt.Errorf("decode idempotency record: %w", err)
	}
	return rec.public(), nil
}
