package memstore

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/understudy/understudy/dispatch"
)

var _ dispatch.RateLimiter = (*RateLimiter)(nil)

// RateLimiter is the in-process dispatch.RateLimiter: a token bucket per key in a map
// behind one mutex, for a lone process (replicas share the Redis one). Sweep, which
// the server runs periodically, frees the buckets that have refilled.
type RateLimiter struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	rate  rate.Limit
	burst int
	mu    sync.Mutex
	by    map[string]*rate.Limiter
}

// NewRateLimiter returns a limiter of perSecond tokens a second with bursts of burst.
func NewRateLimiter(perSecond float64, burst int) *RateLimiter {
	return &RateLimiter{rate: rate.Limit(perSecond), burst: max(1, burst), by: make(map[string]*rate.Limiter)}
}

func (l *RateLimiter) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}

// Allow implements dispatch.RateLimiter: it takes a token from key's bucket; when the
// bucket is empty it reports how long until the next token.
func (l *RateLimiter) Allow(_ context.Context, key string) (time.Duration, bool, error) {
	now := l.now()
	l.mu.Lock()
	lim := l.by[key]
	if lim == nil {
		lim = rate.NewLimiter(l.rate, l.burst)
		l.by[key] = lim
	}
	l.mu.Unlock()
	res := lim.ReserveN(now, 1)
	if !res.OK() {
		return time.Second, false, nil
	}
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return d, false, nil
	}
	return 0, true, nil
}

// Sweep forgets callers whose bucket has refilled (they are indistinguishable from new
// ones, so memory stays proportional to recently active callers) and returns how many.
func (l *RateLimiter) Sweep() int {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for key, lim := range l.by {
		if lim.TokensAt(now) >= float64(l.burst) {
			delete(l.by, key)
			n++
		}
	}
	return n
}

// Len is the number of callers tracked.
func (l *RateLimiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.by)
}
