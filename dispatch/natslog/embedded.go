// Package natslog keeps Understudy's durable records in NATS JetStream: the driver pay
// ledger today. The embedded default runs an in-process NATS server with JetStream in
// the data directory; production connects to the deployment's NATS cluster.
package natslog

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Embedded is an in-process NATS server with JetStream.
type Embedded struct {
	srv   *server.Server
	peers int // the other nodes of its cluster (StartNode); 0 when alone
}

// StartEmbedded starts a NATS server with JetStream storing in dir, listening on
// addr (host:port; port 0 picks a free one) so that other local processes, such as
// `understudy ledger export`, can reach it.
func StartEmbedded(dir, addr string) (*Embedded, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("embedded nats address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("embedded nats port %q: %w", portStr, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: "understudy-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		NoSigs:     true,
		NoLog:      true,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("embedded nats did not start within 10 s")
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		return nil, errors.New("embedded nats started without JetStream")
	}
	return &Embedded{srv: srv}, nil
}

// URL is the client URL of the server.
func (e *Embedded) URL() string { return e.srv.ClientURL() }

// Connect opens a client connection to the server, in process, reconnecting forever
// as Connect does; opts come after those defaults.
func (e *Embedded) Connect(opts ...nats.Option) (*nats.Conn, error) {
	return nats.Connect(e.URL(), append([]nats.Option{nats.InProcessServer(e.srv), reconnectForever()}, opts...)...)
}

// Close stops the server and waits until it has.
func (e *Embedded) Close() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}
