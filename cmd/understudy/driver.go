package main

import (
	"log/slog"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/driver"
)

// newGateway builds the driver websocket gateway (GET /v1/driver/ws): it verifies
// driver tokens with v, drives the engine, receives the engine's driver events, and at
// shutdown tells every driver to reconnect.
func (s *server) newGateway(v dispatch.Verifier) *driver.Gateway {
	return &driver.Gateway{
		Engine:         s.engine.Drivers(),
		Verifier:       v,
		AllowedOrigins: s.allowedOrigins(),
		Config:         s.cfg.Driver,
		Logger:         s.log.With(slog.String("component", "driver")),
		Metrics:        driver.NewMetrics(s.registry),
	}
}

// newPay builds the pay routes on the ledger, for callers whose tokens v verifies.
func (s *server) newPay(v dispatch.Verifier) *driver.Pay {
	return &driver.Pay{Ledger: s.ledger, Verifier: v, WriteTimeout: s.cfg.HTTP.WriteTimeout, Limiter: s.limiter,
		Logger: s.log.With(slog.String("component", "pay"))}
}
