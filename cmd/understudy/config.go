package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/jwtauth"
	"github.com/understudy/understudy/driver"
	"github.com/understudy/understudy/rider"
)

// Config is everything `understudy serve` needs: its own settings and the Config of
// each component. Every setting is declared once, by a RegisterFlags beside its field,
// and is a flag, an UNDERSTUDY_* environment variable and a --config file key of the
// same name (see loadSettings). loadConfig builds it: defaults, then the file, then
// the environment, then flags, then Validate.
type Config struct {
	Region string // this region's name; prefixes its Redis keys
	// DeploymentFile is the deployment file (regions and areas) that makes this
	// process one region of several; Deployment is that file, loaded by loadConfig.
	// Without one the region serves everywhere.
	DeploymentFile  string
	Deployment      *dispatch.Deployment
	Addr            string        // HTTP listen address
	DataDir         string        // where the embedded parts keep their files
	ShutdownTimeout time.Duration // how long shutdown may drain
	// DebugAddr, if set, serves net/http/pprof there, on a listener of its own (for
	// profiling under load; keep it on loopback).
	DebugAddr string
	LogLevel  string
	// AllowedOrigins lists the Origins a browser may open the driver socket from and
	// call the rider API from (CORS); empty allows same-host origins and non-browser
	// clients only on the socket, and no other origin on the API.
	AllowedOrigins []string
	// MapTiles is a URL template of base map tiles ({z}, {x}, {y}) the web apps draw
	// under their maps; empty draws the maps on a plain background (no internet
	// needed).
	MapTiles string

	// Where the region keeps its state.
	RedisURL string // hot state in Redis instead of memory (see openHotState)
	NATSURL  string // external NATS for the durable log instead of the embedded server

	// Tokens.
	//
	// Secret is the HMAC secret for development tokens (UNDERSTUDY_SECRET only, never a
	// flag or file); empty means the one generated and kept in DataDir.
	Secret string
	// PublicKeys is a PEM file of Ed25519/RSA public keys for production tokens.
	PublicKeys string
	// MaxTokenLifetime bounds how long a token may be valid (exp - iat, and exp - now).
	MaxTokenLifetime time.Duration

	HTTP     HTTPConfig // the HTTP server: timeouts and the connection cap
	Dispatch dispatch.Config
	Rider    rider.Config // but StreamWriteTimeout, which is HTTP.WriteTimeout
	Driver   driver.Config
}

func defaultConfig() Config {
	return Config{
		Region:           "local",
		Addr:             "127.0.0.1:8080",
		DataDir:          "understudy-data",
		ShutdownTimeout:  10 * time.Second,
		LogLevel:         "info",
		MaxTokenLifetime: jwtauth.DefaultMaxLifetime,
		HTTP:             defaultHTTPConfig(),
		Dispatch:         dispatch.DefaultConfig(),
		Rider:            rider.DefaultConfig(),
		Driver:           driver.DefaultConfig(),
	}
}

// RegisterFlags declares every setting of serve on fs, with c's values as the defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Region, "region", c.Region, "this region's `name` (with --deployment, one of the file's regions)")
	fs.StringVar(&c.DeploymentFile, "deployment", c.DeploymentFile, "JSON `file` of the deployment's regions and areas (default: one region serving everywhere)")
	fs.StringVar(&c.Addr, "addr", c.Addr, "HTTP listen `address`")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "`directory` for the embedded parts' files")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "how long shutdown may drain")
	fs.StringVar(&c.DebugAddr, "debug-addr", c.DebugAddr, "listen `address` for net/http/pprof (profiling; default off, keep it on loopback)")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	listVar(fs, &c.AllowedOrigins, "allowed-origin", "an `origin` whose browser pages may open the driver socket and call the rider API (a list; * for any)")
	fs.StringVar(&c.MapTiles, "map-tiles", c.MapTiles, "`URL` template of base map tiles for the web apps, e.g. https://tiles.example.com/{z}/{x}/{y}.png (default: none, a plain background)")
	fs.StringVar(&c.RedisURL, "redis", c.RedisURL, "Redis `URL` for hot state (default: in memory)")
	fs.StringVar(&c.NATSURL, "nats", c.NATSURL, "NATS `URL` for the durable log (default: embedded)")
	fs.StringVar(&c.PublicKeys, "jwt-public-keys", c.PublicKeys, "PEM `file` of Ed25519/RSA keys that verify production tokens")
	fs.DurationVar(&c.MaxTokenLifetime, "max-token-lifetime", c.MaxTokenLifetime, "refuse tokens valid for longer than this (exp - iat, exp - now)")
	c.HTTP.RegisterFlags(fs)
	c.Dispatch.RegisterFlags(fs)
	c.Rider.RegisterFlags(fs)
	c.Driver.RegisterFlags(fs)
}

// Validate reports every setting that cannot work.
func (c Config) Validate() error {
	var errs []error
	if c.Addr == "" {
		errs = append(errs, errors.New("addr is required"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data-dir is required"))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("shutdown-timeout %s: want > 0", c.ShutdownTimeout))
	}
	if c.MaxTokenLifetime <= 0 {
		errs = append(errs, fmt.Errorf("max-token-lifetime %s: want > 0", c.MaxTokenLifetime))
	}
	if c.DebugAddr != "" {
		if _, _, err := net.SplitHostPort(c.DebugAddr); err != nil {
			errs = append(errs, fmt.Errorf("debug-addr %q: want host:port: %w", c.DebugAddr, err))
		}
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if c.Region == "" || strings.ContainsAny(c.Region, " :{}*") {
		errs = append(errs, fmt.Errorf("region %q: want a name without spaces, colons, braces or stars", c.Region))
	}
	if err := validTileURL(c.MapTiles); err != nil {
		errs = append(errs, err)
	}
	if c.Deployment != nil {
		if _, ok := c.Deployment.Region(c.Region); !ok {
			var names []string
			for _, r := range c.Deployment.Regions {
				names = append(names, r.Name)
			}
			errs = append(errs, fmt.Errorf("region %q is not a region of deployment %s (%s)", c.Region, c.DeploymentFile, strings.Join(names, ", ")))
		}
	}
	if err := c.Rider.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Dispatch.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.HTTP.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Driver.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// loadConfig builds the configuration for args: defaults, file, environment, flags.
func loadConfig(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.String("config", "", "JSON `file` of settings, keyed by the names below (UNDERSTUDY_CONFIG too)")
	cfg.RegisterFlags(fs)
	fs.Usage = func() { fmt.Fprint(fs.Output(), serveUsage); fs.PrintDefaults() }
	err := loadSettings(fs, args, getenv, "config")
	if err != nil {
		return Config{}, err
	}
	cfg.Secret = getenv("UNDERSTUDY_SECRET")
	cfg.Rider.StreamWriteTimeout = cfg.HTTP.WriteTimeout
	if cfg.DeploymentFile != "" {
		if cfg.Deployment, err = dispatch.LoadDeployment(cfg.DeploymentFile); err != nil {
			return Config{}, err
		}
	}
	return cfg, cfg.Validate()
}

const serveUsage = `usage: understudy serve [flags]

Every setting below is a flag, an environment variable and a key of the --config
file, under the same name: --offer-timeout 20s, UNDERSTUDY_OFFER_TIMEOUT=20s,
{"offer-timeout": "20s"}. Flags beat the environment, which beats the file, which
beats the defaults. A list (allowed-origin) is the flag repeated, comma-separated in
the environment, an array in the file. The development token secret is
UNDERSTUDY_SECRET only.

`

func parseLevel(s string) (level int, err error) {
	switch strings.ToLower(s) {
	case "debug":
		return -4, nil
	case "info", "":
		return 0, nil
	case "warn":
		return 4, nil
	case "error":
		return 8, nil
	}
	return 0, fmt.Errorf("log-level %q: want debug, info, warn or error", s)
}
