package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/memstore"
	"github.com/understudy/understudy/dispatch/natslog"
	"github.com/understudy/understudy/dispatch/redisstore"
	"github.com/understudy/understudy/rider"
)

// openRiderAPI builds the rider HTTP API on the region's engine and keys. Idempotency
// keys outlive the process on every store: in Redis with --redis (beside the hot
// state, shared by every replica), else in a JetStream key-value bucket on the
// region's NATS (in the data directory on the embedded default). Rate limits are the
// server's (callerLimiter).
func (s *server) openRiderAPI() (component, error) {
	var idem dispatch.IdempotencyStore
	if rs, ok := s.store.(*redisstore.Store); ok {
		idem = rs.NewIdempotencyStore()
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ttl := max(s.cfg.Rider.IdempotencyTTL, s.cfg.Rider.PendingTTL)
		kv, err := natslog.OpenIdempotencyStore(ctx, s.nats, s.cfg.Region, ttl, 1)
		if err != nil {
			return component{}, fmt.Errorf("open idempotency keys: %w", err)
		}
		idem = kv
	}
	api := &rider.API{
		Engine:      s.engine.Riders(),
		Verifier:    s.keys,
		Idempotency: idem,
		Limiter:     s.limiter,
		Logger:      s.log.With(slog.String("component", "rider")),
		Metrics:     rider.NewMetrics(s.registry),
		Config:      s.cfg.Rider,
		// One list for the browser origins of the driver socket and the rider API.
		AllowedOrigins: s.cfg.AllowedOrigins,
	}
	if err := api.Open(); err != nil {
		return component{}, err
	}
	return component{name: "rider", routes: api.Register, notify: api, run: api.Run, drain: api.Drain}, nil
}

// callerLimiter is the per-caller rate limit of every HTTP route that takes a token
// (rider API, pay routes): one token bucket per role and subject, at --rider-rate and
// --rider-burst. It lives beside the hot state: in Redis with --redis, so a caller
// spread over replicas gets the rate once, else in this process.
func callerLimiter(store dispatch.Store, cfg rider.Config) dispatch.RateLimiter {
	if rs, ok := store.(*redisstore.Store); ok {
		return rs.NewRateLimiter(cfg.Rate, cfg.Burst)
	}
	return memstore.NewRateLimiter(cfg.Rate, cfg.Burst)
}
