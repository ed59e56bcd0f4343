package main

import (
	"log/slog"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/memstore"
	"github.com/understudy/understudy/dispatch/redisstore"
	"github.com/understudy/understudy/rider"
)

// openRiderAPI builds the rider HTTP API on the region's engine and keys. Idempotency
// keys and rate limits live beside the hot state: in Redis with --redis, so every
// replica shares them, else in memory.
func (s *server) openRiderAPI() (component, error) {
	var (
		idem    dispatch.IdempotencyStore = memstore.NewIdempotencyStore()
		limiter dispatch.RateLimiter      // nil: in this process
	)
	if rs, ok := s.store.(*redisstore.Store); ok {
		idem = rs.NewIdempotencyStore()
		limiter = rs.NewRateLimiter(s.cfg.Rider.Rate, s.cfg.Rider.Burst)
	}
	api := &rider.API{
		Engine:      s.engine,
		Verifier:    s.keys,
		Idempotency: idem,
		Limiter:     limiter,
		Logger:      s.log.With(slog.String("component", "rider")),
		Metrics:     rider.NewMetrics(s.registry),
		Config:      s.cfg.Rider,
	}
	if err := api.Open(); err != nil {
		return component{}, err
	}
	return component{name: "rider", routes: api.Register, notify: api, run: api.Run, drain: api.Drain}, nil
}
