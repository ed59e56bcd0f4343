package dispatch

import (
	"context"
	"log/slog"
	"time"
)

// RateLimiter is a token bucket per caller shared by every process that uses the
// same one, so a caller spread over several replicas gets the rate once, not once per
// replica. The Redis adapter implements it; a lone process may keep buckets in memory.
type RateLimiter interface {
	// Allow takes one token from key's bucket. When the bucket is empty it reports
	// false and how long until the next token.
	Allow(ctx context.Context, key string) (wait time.Duration, ok bool, err error)
}

// RateLimited is the error that tells a client to come back after wait (429 with
// Retry-After over HTTP, in whole seconds, at least one).
func RateLimited(wait time.Duration) *Error {
	s := int((wait + time.Second - 1) / time.Second)
	return &Error{Code: ECodeRateLimited, Message: "too many requests; retry later", RetryAfterS: max(s, 1)}
}

// Throttle takes one token from the bucket of caller id (one bucket per role and
// subject) and returns RateLimited when it is empty. A limiter that cannot be reached
// lets the request through, and logs it to log (if not nil): refusing every caller
// because Redis blinked would be worse than a burst. A nil limiter allows everything.
func Throttle(ctx context.Context, limiter RateLimiter, id Identity, log *slog.Logger) error {
	if limiter == nil {
		return nil
	}
	who := string(id.Role) + ":" + id.Subject
	wait, ok, err := limiter.Allow(ctx, who)
	switch {
	case err != nil:
		if log != nil {
			log.Warn("rate limiter unreachable: allowing", slog.String("caller", who), slog.Any("err", err))
		}
	case !ok:
		return RateLimited(wait)
	}
	return nil
}
