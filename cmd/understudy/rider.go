package main

import (
	"log/slog"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/rider"
)

// newRiderAPI builds the rider HTTP API on the region's engine, idempotency keys and
// rate limits (openHotState), for callers whose tokens v verifies.
func (s *server) newRiderAPI(v dispatch.Verifier) *rider.API {
	return &rider.API{
		Engine:      s.engine.Riders(),
		Verifier:    v,
		Idempotency: s.idem,
		Limiter:     s.limiter,
		Logger:      s.log.With(slog.String("component", "rider")),
		Metrics:     rider.NewMetrics(s.registry),
		Config:      s.cfg.Rider,
		// One list for the browser origins of the driver socket and the rider API.
		AllowedOrigins: s.allowedOrigins(),
	}
}
