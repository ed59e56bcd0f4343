// Package drivertest holds the helpers of tests that play a driver app with
// driver/client: waiting for a frame of a given type, or for the connection to end.
package drivertest

import (
	"errors"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/understudy/understudy/dispatch/dispatchtest"
	"github.com/understudy/understudy/driver"
	"github.com/understudy/understudy/driver/client"
)

// Wait is how long a helper waits for a frame, or the end, before it fails the test:
// generous, as a correctness test must not fail because the machine is busy.
const Wait = dispatchtest.Patience

// Next returns c's next frame, which must be of type typ.
func Next(tb testing.TB, c *client.Client, typ string) driver.Message {
	tb.Helper()
	select {
	case m, ok := <-c.Frames():
		if !ok {
			tb.Fatalf("waiting for %s: connection ended: %v", typ, c.Err())
		}
		if m.Type != typ {
			tb.Fatalf("got frame %s, want %s", m.Raw, typ)
		}
		return m
	case <-time.After(Wait):
		tb.Fatalf("no %s frame within %s", typ, Wait)
	}
	return driver.Message{}
}

// End waits for c to stop (skipping any frames still queued) and returns why.
func End(tb testing.TB, c *client.Client) error {
	tb.Helper()
	deadline := time.After(Wait)
	for {
		select {
		case _, ok := <-c.Frames():
			if !ok {
				return c.Err()
			}
		case <-deadline:
			tb.Fatalf("connection still open after %s", Wait)
		}
	}
}

// CloseError waits for c to stop and returns the close frame that stopped it.
func CloseError(tb testing.TB, c *client.Client) *websocket.CloseError {
	tb.Helper()
	err := End(tb, c)
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		tb.Fatalf("connection ended with %v, want a close frame", err)
	}
	return ce
}
