package dispatch

import (
	"context"
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
