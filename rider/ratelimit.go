package rider

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limiter is a token bucket per caller.
type limiter struct {
	rate  rate.Limit
	burst int

	mu sync.Mutex
	by map[string]*rate.Limiter
}

func newLimiter(perSecond float64, burst int) *limiter {
	return &limiter{rate: rate.Limit(perSecond), burst: burst, by: make(map[string]*rate.Limiter)}
}

// allow takes a token from who's bucket at now; when it is empty it reports how long
// until the next token.
func (l *limiter) allow(who string, now time.Time) (wait time.Duration, ok bool) {
	l.mu.Lock()
	lim := l.by[who]
	if lim == nil {
		lim = rate.NewLimiter(l.rate, l.burst)
		l.by[who] = lim
	}
	l.mu.Unlock()
	res := lim.ReserveN(now, 1)
	if !res.OK() {
		return time.Second, false
	}
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return d, false
	}
	return 0, true
}

// sweep forgets callers whose bucket has refilled: they are indistinguishable from
// new ones, so memory stays proportional to recently active callers.
func (l *limiter) sweep(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for who, lim := range l.by {
		if lim.TokensAt(now) >= float64(l.burst) {
			delete(l.by, who)
		}
	}
}

// len is the number of callers tracked.
func (l *limiter) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.by)
}
