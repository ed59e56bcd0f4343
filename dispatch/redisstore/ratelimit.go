package redisstore

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/understudy/understudy/dispatch"
)

var _ dispatch.RateLimiter = (*RateLimiter)(nil)

// RateLimiter is a token bucket per key in Redis (the generic cell rate algorithm:
// one timestamp per key), on Redis's own clock so replicas with skewed clocks agree.
type RateLimiter struct {
	client   redis.UniversalClient
	prefix   string
	interval int64 // microseconds between tokens
	burst    int64
}

// NewRateLimiter returns a limiter of perSecond tokens a second with bursts of burst,
// on the Store's Redis and prefix.
func (s *Store) NewRateLimiter(perSecond float64, burst int) *RateLimiter {
	interval := int64(math.Max(1, math.Round(1e6/perSecond)))
	return &RateLimiter{client: s.client, prefix: s.prefix + "rate:", interval: interval, burst: int64(max(1, burst))}
}

// gcraScript: the key holds the theoretical arrival time (TAT) in microseconds. A
// request is allowed while TAT - now <= interval*(burst-1); it then moves TAT on by one
// interval. It returns 0 when allowed, else the microseconds to wait.
var gcraScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local over = tat - now - interval * (burst - 1)
if over > 0 then return over end
local next = tat + interval
redis.call('SET', KEYS[1], string.format('%d', next), 'PX', math.ceil((next - now) / 1000) + 1)
return 0
`)

// Allow implements dispatch.RateLimiter.
func (l *RateLimiter) Allow(ctx context.Context, key string) (time.Duration, bool, error) {
	wait, err := gcraScript.Run(ctx, l.client, []string{l.prefix + key}, l.interval, l.burst).Int64()
	if err != nil {
		return 0, false, fmt.Errorf("redis rate limit: %w", err)
	}
	if wait > 0 {
		return time.Duration(wait) * time.Microsecond, false, nil
	}
	return 0, true, nil
}
