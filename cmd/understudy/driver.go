package main

import (
	"fmt"
	"log/slog"
	"slices"

	"github.com/understudy/understudy/driver"
)

// openDriverGateway mounts the driver websocket gateway (GET /v1/driver/ws) and the pay
// routes: it verifies driver tokens with the server's keys, drives the engine, receives
// the engine's driver events, and at shutdown tells every driver to reconnect.
func (s *server) openDriverGateway() (component, error) {
	gw := &driver.Gateway{
		Engine:         s.engine.Drivers(),
		Verifier:       s.keys,
		AllowedOrigins: s.cfg.AllowedOrigins,
		Config:         s.cfg.Driver,
		Logger:         s.log.With(slog.String("component", "driver")),
		Metrics:        driver.NewMetrics(s.registry),
	}
	if err := gw.Open(); err != nil {
		return component{}, fmt.Errorf("open driver gateway: %w", err)
	}
	pay := &driver.Pay{Ledger: s.ledger, Verifier: s.keys, WriteTimeout: s.cfg.HTTP.WriteTimeout, Limiter: s.limiter,
		Logger: s.log.With(slog.String("component", "pay"))}
	return component{name: "driver", routes: slices.Concat(gw.Routes(), pay.Routes()), notify: gw, drain: gw.Drain}, nil
}
