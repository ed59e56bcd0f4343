package main

import (
	"context"
	"fmt"

	"github.com/understudy/understudy/dispatch/memstore"
	"github.com/understudy/understudy/dispatch/redisstore"
)

// openHotState opens, as the configuration chooses, where the region keeps what
// changes by the second: the Store, the idempotency keys of the rider API and the
// per-caller rate limits of every route that takes a token.
//
//   - With --redis, all three are in Redis, shared by every replica of the region (a
//     caller spread over replicas gets its rate once).
//   - Otherwise the Store and the rate limits are in this process, and the
//     idempotency keys in a JetStream key-value bucket on the region's NATS (in the
//     data directory on the embedded default), so they outlive the process.
//   - In a deployment of several regions the keys are in that bucket either way,
//     shared by the regions, so that a region's successor knows them.
//
// It runs after openLog, whose NATS connection the bucket needs.
func (s *server) openHotState(ctx context.Context) error {
	rc := s.cfg.Rider
	switch s.storeName() {
	case "redis":
		rs, err := redisstore.Open(ctx, s.cfg.RedisURL, "understudy:"+s.cfg.Region+":")
		if err != nil {
			return fmt.Errorf("open redis store: %w", err)
		}
		s.closers = append(s.closers, rs.Close)
		s.store, s.idem, s.limiter = rs, rs.NewIdempotencyStore(), rs.NewRateLimiter(rc.Rate, rc.Burst)
		if s.natsIdem != nil { // a deployment's: shared by its regions
			s.idem = s.natsIdem
		}
	default:
		st := memstore.New() // the keys' bucket: opened with the log (openStreams)
		s.closers = append(s.closers, st.Close)
		s.store, s.idem, s.limiter = st, s.natsIdem, memstore.NewRateLimiter(rc.Rate, rc.Burst)
	}
	return nil
}

// storeName says where the hot state is, as --redis chooses: "redis" or "memory".
func (s *server) storeName() string {
	if s.cfg.RedisURL != "" {
		return "redis"
	}
	return "memory"
}
