package main

import (
	"fmt"
	"log/slog"

	"github.com/understudy/understudy/driver"
)

// openDriverGateway mounts the driver websocket gateway (GET /v1/driver/ws): it
// verifies driver tokens with the server's keys, drives the engine, receives the
// engine's driver events, and at shutdown tells every driver to reconnect.
func (s *server) openDriverGateway() (component, error) {
	gw := &driver.Gateway{
		Engine:         s.engine,
		Verifier:       s.keys,
		AllowedOrigins: s.cfg.AllowedOrigins,
		Grace:          s.cfg.DriverGrace,
		Logger:         s.log.With(slog.String("component", "driver")),
		Metrics:        driver.NewMetrics(s.registry),
	}
	if err := gw.Open(); err != nil {
		return component{}, fmt.Errorf("open driver gateway: %w", err)
	}
	return component{name: "driver", routes: gw.Routes, notify: gw, drain: gw.Drain}, nil
}
