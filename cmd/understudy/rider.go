package main

import (
	"log/slog"

	"github.com/understudy/understudy/rider"
)

// openRiderAPI builds the rider HTTP API on the region's engine, keys, idempotency
// keys and rate limits (openHotState).
func (s *server) openRiderAPI() (component, error) {
	api := &rider.API{
		Engine:      s.engine.Riders(),
		Verifier:    s.keys,
		Idempotency: s.idem,
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
	return component{name: "rider", routes: api.Routes(), notify: api, run: api.Run, drain: api.Drain}, nil
}
