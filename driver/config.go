package driver

import (
	"errors"
	"flag"
	"fmt"
	"time"

	"golang.org/x/time/rate"

	"github.com/understudy/understudy/dispatch"
)

// Config tunes the gateway's sockets. The zero value is not usable: start from
// DefaultConfig and override. Each setting has a name (RegisterFlags) that is also its
// flag, environment variable and config-file key in `understudy serve`, and that
// Validate's errors use.
type Config struct {
	// Grace is how long a dropped driver keeps its session (state, offer, ride) before
	// the gateway takes it offline.
	Grace time.Duration
	// PingInterval is how often the server pings; ReadTimeout is how long a socket may
	// stay silent (no frame, no pong) before it is dropped. ReadTimeout must exceed
	// PingInterval.
	PingInterval time.Duration
	ReadTimeout  time.Duration
	// WriteTimeout bounds each write (and the websocket handshake); CloseTimeout is how
	// long the gateway waits for the app to answer its close frame.
	WriteTimeout time.Duration
	CloseTimeout time.Duration
	// OpTimeout bounds each engine call a frame makes.
	OpTimeout time.Duration
	// MaxFrameBytes is the largest frame accepted; larger ones close the socket with
	// 1009.
	MaxFrameBytes int
	// FrameRate and FrameBurst limit the frames of a socket, pings and pongs included:
	// at most FrameRate per second on average, beyond a burst of FrameBurst plus
	// FloodWindow's worth. A socket that keeps above FrameRate for longer than that
	// floods and is closed with 1008; a socket whose frames only queued up while the
	// server was slow is not (it can be FloodWindow behind).
	FrameRate   rate.Limit
	FrameBurst  int
	FloodWindow time.Duration
	// FrameReadRate is the most frames per second the gateway reads from one socket
	// (burst FrameBurst): a faster sender is slowed down by TCP flow control while the
	// gateway waits, not closed. At least FrameRate.
	FrameReadRate rate.Limit
	// SendQueue is how many frames may wait for a slow socket before it is closed with
	// CloseTooSlow.
	SendQueue int
	// ReadBufferSize and WriteBufferSize size the socket buffers in bytes (the write
	// buffer is pooled, held only while writing).
	ReadBufferSize  int
	WriteBufferSize int
	// BorderLocations is how many location frames in a row must fall in an area
	// another region serves before the driver is sent there (reconnect, close 4002):
	// the hysteresis that keeps a driver on the border from bouncing between regions.
	BorderLocations int
}

// DefaultConfig returns the defaults docs/driver-protocol.md describes.
func DefaultConfig() Config {
	return Config{
		Grace:           60 * time.Second,
		PingInterval:    25 * time.Second,
		ReadTimeout:     60 * time.Second,
		WriteTimeout:    10 * time.Second,
		CloseTimeout:    2 * time.Second,
		OpTimeout:       5 * time.Second,
		MaxFrameBytes:   4096,
		FrameRate:       10,
		FrameBurst:      40,
		FloodWindow:     30 * time.Second,
		FrameReadRate:   100,
		SendQueue:       64,
		ReadBufferSize:  512,
		WriteBufferSize: 1024,
		BorderLocations: 3,
	}
}

// RegisterFlags declares each setting on fs under its name, with c's values as the
// defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.DurationVar(&c.Grace, "driver-grace", c.Grace, "how long a dropped driver keeps its session before going offline")
	fs.DurationVar(&c.PingInterval, "driver-ping-interval", c.PingInterval, "how often the server pings each driver socket")
	fs.DurationVar(&c.ReadTimeout, "driver-read-timeout", c.ReadTimeout, "drop a driver socket silent (no frame, no pong) for this long; over driver-ping-interval")
	fs.DurationVar(&c.WriteTimeout, "driver-write-timeout", c.WriteTimeout, "how long each write to a driver socket, and its handshake, may take")
	fs.DurationVar(&c.CloseTimeout, "driver-close-timeout", c.CloseTimeout, "how long to wait for a driver app to answer the close frame")
	fs.DurationVar(&c.OpTimeout, "driver-op-timeout", c.OpTimeout, "how long the engine call of one driver frame may take")
	fs.IntVar(&c.MaxFrameBytes, "driver-max-frame-bytes", c.MaxFrameBytes, "largest driver frame accepted, in `bytes` (larger: close 1009)")
	fs.Float64Var((*float64)(&c.FrameRate), "driver-frame-rate", float64(c.FrameRate), "driver frames per second a socket may keep up (pings and pongs included)")
	fs.IntVar(&c.FrameBurst, "driver-frame-burst", c.FrameBurst, "driver frames a socket may send at once beyond driver-frame-rate")
	fs.DurationVar(&c.FloodWindow, "driver-flood-window", c.FloodWindow, "how long a socket may stay over driver-frame-rate before it is closed 1008")
	fs.Float64Var((*float64)(&c.FrameReadRate), "driver-frame-read-rate", float64(c.FrameReadRate), "most driver frames per second read from one socket (faster senders wait); at least driver-frame-rate")
	fs.IntVar(&c.SendQueue, "driver-send-queue", c.SendQueue, "frames that may wait for a slow driver socket before it is closed 4001")
	fs.IntVar(&c.ReadBufferSize, "driver-read-buffer", c.ReadBufferSize, "read buffer of each driver socket, in `bytes`")
	fs.IntVar(&c.WriteBufferSize, "driver-write-buffer", c.WriteBufferSize, "write buffer of a driver socket while it writes, in `bytes`")
	fs.IntVar(&c.BorderLocations, "driver-border-locations", c.BorderLocations, "location frames in a row in another region's area before a driver without a ride is sent there (reconnect, 4002)")
}

// Validate reports every setting out of range, by name.
func (c Config) Validate() error {
	errs := dispatch.PositiveDurations(
		dispatch.Duration{Name: "driver-grace", Value: c.Grace},
		dispatch.Duration{Name: "driver-ping-interval", Value: c.PingInterval},
		dispatch.Duration{Name: "driver-read-timeout", Value: c.ReadTimeout},
		dispatch.Duration{Name: "driver-write-timeout", Value: c.WriteTimeout},
		dispatch.Duration{Name: "driver-close-timeout", Value: c.CloseTimeout},
		dispatch.Duration{Name: "driver-op-timeout", Value: c.OpTimeout},
		dispatch.Duration{Name: "driver-flood-window", Value: c.FloodWindow},
	)
	if c.PingInterval > 0 && c.ReadTimeout > 0 && c.ReadTimeout <= c.PingInterval {
		errs = append(errs, fmt.Errorf("driver-read-timeout %s: want more than driver-ping-interval %s", c.ReadTimeout, c.PingInterval))
	}
	for _, n := range []struct {
		name string
		v    int
	}{
		{"driver-max-frame-bytes", c.MaxFrameBytes}, {"driver-frame-burst", c.FrameBurst}, {"driver-send-queue", c.SendQueue},
		{"driver-read-buffer", c.ReadBufferSize}, {"driver-write-buffer", c.WriteBufferSize},
		{"driver-border-locations", c.BorderLocations},
	} {
		if n.v < 1 {
			errs = append(errs, fmt.Errorf("%s %d: want >= 1", n.name, n.v))
		}
	}
	if !(c.FrameRate > 0) {
		errs = append(errs, fmt.Errorf("driver-frame-rate %v: want > 0", float64(c.FrameRate)))
	}
	if !(c.FrameReadRate >= c.FrameRate) || !(c.FrameReadRate > 0) {
		errs = append(errs, fmt.Errorf("driver-frame-read-rate %v: want > 0 and at least driver-frame-rate %v",
			float64(c.FrameReadRate), float64(c.FrameRate)))
	}
	return errors.Join(errs...)
}
