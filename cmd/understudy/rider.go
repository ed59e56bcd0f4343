package main

import (
	"log/slog"

	"github.com/understudy/understudy/dispatch/memstore"
	"github.com/understudy/understudy/rider"
)

// openRiderAPI builds the rider HTTP API on the region's engine and keys, with
// in-memory idempotency keys (Redis-backed ones come with the Redis store).
func (s *server) openRiderAPI() (component, error) {
	api := &rider.API{
		Engine:      s.engine,
		Verifier:    s.keys,
		Idempotency: memstore.NewIdempotencyStore(),
		Logger:      s.log.With(slog.String("component", "rider")),
		Metrics:     rider.NewMetrics(s.registry),
		Config:      s.cfg.Rider,
	}
	if err := api.Open(); err != nil {
		return component{}, err
	}
	return component{name: "rider", routes: api.Register, notify: api, run: api.Run, drain: api.Drain}, nil
}
