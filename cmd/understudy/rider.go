package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/natslog"
	"github.com/understudy/understudy/dispatch/redisstore"
	"github.com/understudy/understudy/rider"
)

// openRiderAPI builds the rider HTTP API on the region's engine and keys. Idempotency
// keys outlive the process on every store: in Redis with --redis (beside the hot
// state, shared by every replica), else in a JetStream key-value bucket on the
// region's NATS (in the data directory on the embedded default). Rate limits are in
// Redis with --redis, else in this process.
func (s *server) openRiderAPI() (component, error) {
	var (
		idem    dispatch.IdempotencyStore
		limiter dispatch.RateLimiter // nil: in this process
	)
	if rs, ok := s.store.(*redisstore.Store); ok {
		idem = rs.NewIdempotencyStore()
		limiter = rs.NewRateLimiter(s.cfg.Rider.Rate, s.cfg.Rider.Burst)
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
		Engine:      s.engine,
		Verifier:    s.keys,
		Idempotency: idem,
		Limiter:     limiter,
		Logger:      s.log.With(slog.String("component", "rider")),
		Metrics:     rider.NewMetrics(s.registry),
		Config:      s.cfg.Rider,
		// One list for the browser origins of the driver socket and the rider API.
		AllowedOrigins: s.cfg.AllowedOrigins,
	}
	api.Config.StreamWriteTimeout = s.cfg.HTTP.WriteTimeout
	if err := api.Open(); err != nil {
		return component{}, err
	}
	return component{name: "rider", routes: api.Register, notify: api, run: api.Run, drain: api.Drain}, nil
}
