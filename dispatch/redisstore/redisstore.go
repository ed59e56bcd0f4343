// Package redisstore is the production dispatch.Store: a region's hot state in Redis.
// Each commit is one Lua script that checks the fencing epoch and every record's
// version and then writes them all, so engine replicas sharing a Redis never assign a
// driver twice, and a writer that lost its lease cannot write at all.
package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/understudy/understudy/dispatch"
)

var _ dispatch.Store = (*Store)(nil)

// Store keeps each driver and ride in a Redis hash (fields v: version, s: state or
// status, j: the record as JSON; drivers also loc and at for the position, which only
// SetLocation writes), a set of driver ids, a set of active ride ids, and the fence.
type Store struct {
	client redis.UniversalClient
	prefix string
}

// New returns a Store on client whose keys all start with prefix (e.g. "understudy:seoul:").
func New(client redis.UniversalClient, prefix string) *Store {
	return &Store{client: client, prefix: prefix}
}

// Open connects to url (redis://host:port/db) and checks that Redis answers.
func Open(ctx context.Context, url, prefix string) (*Store, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", err)
	}
	c := redis.NewClient(opts)
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("redis ping %s: %w", opts.Addr, err)
	}
	return New(c, prefix), nil
}

func (s *Store) driverKey(id string) string { return s.prefix + "driver:" + id }
func (s *Store) rideKey(id string) string   { return s.prefix + "ride:" + id }
func (s *Store) driversKey() string         { return s.prefix + "drivers" }
func (s *Store) activeKey() string          { return s.prefix + "rides:active" }
func (s *Store) fenceKey() string           { return s.prefix + "fence" }

// location is how a driver's position is kept, apart from its versioned record.
type location struct {
	Lat float64 `json:"lat"`
	Lng float64 `json:"lng"`
}

// Driver implements dispatch.Store.
func (s *Store) Driver(ctx context.Context, id string) (dispatch.Driver, error) {
	vals, err := s.client.HMGet(ctx, s.driverKey(id), "v", "j", "loc", "at").Result()
	if err != nil {
		return dispatch.Driver{}, fmt.Errorf("redis get driver %s: %w", id, err)
	}
	return decodeDriver(id, vals)
}

func decodeDriver(id string, vals []any) (dispatch.Driver, error) {
	if vals[0] == nil || vals[1] == nil {
		return dispatch.Driver{}, dispatch.ErrDriverNotFound
	}
	var d dispatch.Driver
	if err := json.Unmarshal([]byte(vals[1].(string)), &d); err != nil {
		return dispatch.Driver{}, fmt.Errorf("decode driver %s: %w", id, err)
	}
	v, err := strconv.ParseUint(vals[0].(string), 10, 64)
	if err != nil {
		return dispatch.Driver{}, fmt.Errorf("decode driver %s version: %w", id, err)
	}
	d.Version = v
	d.Location, d.LocatedAt = nil, time.Time{}
	if loc, ok := vals[2].(string); ok {
		var l location
		if err := json.Unmarshal([]byte(loc), &l); err != nil {
			return dispatch.Driver{}, fmt.Errorf("decode driver %s location: %w", id, err)
		}
		d.Location = &dispatch.Point{Lat: l.Lat, Lng: l.Lng}
		if at, ok := vals[3].(string); ok {
			if ns, err := strconv.ParseInt(at, 10, 64); err == nil {
				d.LocatedAt = time.Unix(0, ns).UTC()
			}
		}
	}
	return d, nil
}

// Ride implements dispatch.Store.
func (s *Store) Ride(ctx context.Context, id string) (dispatch.Ride, error) {
	vals, err := s.client.HMGet(ctx, s.rideKey(id), "v", "j").Result()
	if err != nil {
		return dispatch.Ride{}, fmt.Errorf("redis get ride %s: %w", id, err)
	}
	return decodeRide(id, vals)
}

func decodeRide(id string, vals []any) (dispatch.Ride, error) {
	if vals[0] == nil || vals[1] == nil {
		return dispatch.Ride{}, dispatch.ErrRideNotFound
	}
	var r dispatch.Ride
	if err := json.Unmarshal([]byte(vals[1].(string)), &r); err != nil {
		return dispatch.Ride{}, fmt.Errorf("decode ride %s: %w", id, err)
	}
	v, err := strconv.ParseUint(vals[0].(string), 10, 64)
	if err != nil {
		return dispatch.Ride{}, fmt.Errorf("decode ride %s version: %w", id, err)
	}
	r.Version = v
	return r, nil
}

// commitScript checks the fence and every version, then writes every record.
//
// KEYS: fence, drivers set, active set, then the n driver keys, then the m ride keys.
// ARGV: epoch, n, then per driver (id, expected version, state, json), then per ride
// (id, expected version, status, json, final 0/1, version to store).
var commitScript = redis.NewScript(`
local fence = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) < fence then return 'stale' end
local n = tonumber(ARGV[2])
local m = #KEYS - 3 - n
for i = 1, n + m do
  local base
  if i <= n then base = 3 + (i-1)*4 else base = 3 + n*4 + (i-n-1)*6 end
  local cur = tonumber(redis.call('HGET', KEYS[3+i], 'v') or '0')
  if cur ~= tonumber(ARGV[base+1]) then return 'conflict' end
end
for i = 1, n do
  local base = 3 + (i-1)*4
  redis.call('HSET', KEYS[3+i], 'v', tonumber(ARGV[base+1]) + 1, 's', ARGV[base+2], 'j', ARGV[base+3])
  redis.call('SADD', KEYS[2], ARGV[base])
end
for i = 1, m do
  local base = 3 + n*4 + (i-1)*6
  redis.call('HSET', KEYS[3+n+i], 'v', ARGV[base+5], 's', ARGV[base+2], 'j', ARGV[base+3])
  if ARGV[base+4] == '1' then
    redis.call('SREM', KEYS[3], ARGV[base])
  else
    redis.call('SADD', KEYS[3], ARGV[base])
  end
end
return 'ok'
`)

// Commit implements dispatch.Store. Driver positions are not part of the versioned
// record: Commit never writes them, SetLocation does.
func (s *Store) Commit(ctx context.Context, tx dispatch.Tx) error {
	keys := []string{s.fenceKey(), s.driversKey(), s.activeKey()}
	args := []any{tx.Epoch, len(tx.Drivers)}
	for _, d := range tx.Drivers {
		expected := d.Version
		d.Version, d.Location, d.LocatedAt = 0, nil, time.Time{}
		j, err := json.Marshal(d)
		if err != nil {
			return fmt.Errorf("encode driver %s: %w", d.ID, err)
		}
		keys = append(keys, s.driverKey(d.ID))
		args = append(args, d.ID, expected, string(d.State), j)
	}
	ride := func(r dispatch.Ride, expected, next uint64) error {
		r.Version = 0
		j, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("encode ride %s: %w", r.ID, err)
		}
		final := 0
		if r.Status.Final() {
			final = 1
		}
		keys = append(keys, s.rideKey(r.ID))
		args = append(args, r.ID, expected, string(r.Status), j, final, next)
		return nil
	}
	for _, r := range tx.Rides {
		if err := ride(r, r.Version, r.Version+1); err != nil {
			return err
		}
	}
	for _, r := range tx.Restore { // must not exist; keeps its version
		if err := ride(r, 0, max(1, r.Version)); err != nil {
			return err
		}
	}
	for _, p := range tx.Replace { // must be stored at p.Over; keeps its version
		if p.Over == 0 {
			return dispatch.ErrVersionConflict
		}
		if err := ride(p.Ride, p.Over, max(1, p.Ride.Version)); err != nil {
			return err
		}
	}
	res, err := commitScript.Run(ctx, s.client, keys, args...).Text()
	if err != nil {
		return fmt.Errorf("redis commit: %w", err)
	}
	switch res {
	case "ok":
		return nil
	case "conflict":
		return dispatch.ErrVersionConflict
	case "stale":
		return dispatch.ErrStaleEpoch
	}
	return fmt.Errorf("redis commit: unexpected answer %q", res)
}

// setLocationScript writes a known driver's position and returns its state.
var setLocationScript = redis.NewScript(`
local s = redis.call('HGET', KEYS[1], 's')
if not s then return false end
redis.call('HSET', KEYS[1], 'loc', ARGV[1], 'at', ARGV[2])
return s
`)

// SetLocation implements dispatch.Store.
func (s *Store) SetLocation(ctx context.Context, id string, p dispatch.Point, at time.Time) (dispatch.DriverState, error) {
	loc, _ := json.Marshal(location{Lat: p.Lat, Lng: p.Lng}) // two floats always encode
	state, err := setLocationScript.Run(ctx, s.client, []string{s.driverKey(id)}, loc, at.UnixNano()).Text()
	if errors.Is(err, redis.Nil) {
		return "", dispatch.ErrDriverNotFound
	}
	if err != nil {
		return "", fmt.Errorf("redis set location of %s: %w", id, err)
	}
	return dispatch.DriverState(state), nil
}

// generationScript returns the store's generation, setting a new one if it has none
// (a fresh or flushed Redis).
var generationScript = redis.NewScript(`
local g = redis.call('GET', KEYS[1])
if not g then redis.call('SET', KEYS[1], ARGV[1]); g = ARGV[1] end
return g
`)

// Generation implements dispatch.Generation: a random id kept in Redis, which a new
// one replaces when Redis has lost it with everything else.
func (s *Store) Generation(ctx context.Context) (string, error) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	g, err := generationScript.Run(ctx, s.client, []string{s.prefix + "generation"}, hex.EncodeToString(b[:])).Text()
	if err != nil {
		return "", fmt.Errorf("redis generation: %w", err)
	}
	return g, nil
}

var fenceScript = redis.NewScript(`
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local e = tonumber(ARGV[1])
if e > cur then redis.call('SET', KEYS[1], e); cur = e end
return cur
`)

// Fence implements dispatch.Store.
func (s *Store) Fence(ctx context.Context, epoch uint64) (uint64, error) {
	n, err := fenceScript.Run(ctx, s.client, []string{s.fenceKey()}, epoch).Int64()
	if err != nil {
		return 0, fmt.Errorf("redis fence: %w", err)
	}
	return uint64(n), nil
}

// scanBatch is how many records one pipelined read fetches while listing.
const scanBatch = 500

// Drivers implements dispatch.Store.
func (s *Store) Drivers(ctx context.Context, fn func(dispatch.Driver) error) error {
	return s.list(ctx, s.driversKey(), s.driverKey, []string{"v", "j", "loc", "at"}, func(id string, vals []any) error {
		d, err := decodeDriver(id, vals)
		if errors.Is(err, dispatch.ErrDriverNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return fn(d)
	})
}

// ActiveRides implements dispatch.Store.
func (s *Store) ActiveRides(ctx context.Context, fn func(dispatch.Ride) error) error {
	return s.list(ctx, s.activeKey(), s.rideKey, []string{"v", "j"}, func(id string, vals []any) error {
		r, err := decodeRide(id, vals)
		if errors.Is(err, dispatch.ErrRideNotFound) || (err == nil && r.Status.Final()) {
			return nil
		}
		if err != nil {
			return err
		}
		return fn(r)
	})
}

// list reads the records whose ids are in set, in id order, a batch at a time.
func (s *Store) list(ctx context.Context, set string, key func(string) string, fields []string, fn func(string, []any) error) error {
	ids, err := s.client.SMembers(ctx, set).Result()
	if err != nil {
		return fmt.Errorf("redis list %s: %w", set, err)
	}
	slices.Sort(ids)
	for start := 0; start < len(ids); start += scanBatch {
		batch := ids[start:min(start+scanBatch, len(ids))]
		cmds := make([]*redis.SliceCmd, len(batch))
		_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, id := range batch {
				cmds[i] = p.HMGet(ctx, key(id), fields...)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("redis list %s: %w", set, err)
		}
		for i, id := range batch {
			if err := fn(id, cmds[i].Val()); err != nil {
				return err
			}
		}
	}
	return nil
}

// Ping reports whether Redis answers, for readiness.
func (s *Store) Ping(ctx context.Context) error { return s.client.Ping(ctx).Err() }

// Close implements dispatch.Store.
func (s *Store) Close() error { return s.client.Close() }
