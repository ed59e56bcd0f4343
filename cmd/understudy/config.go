package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/jwtauth"
	"github.com/understudy/understudy/rider"
)

// Config is everything `understudy serve` needs. It is built from defaults, then the
// --config file, then UNDERSTUDY_* environment variables, then flags, then validated.
type Config struct {
	Region          string        // this region's name; prefixes its Redis keys
	Addr            string        // HTTP listen address
	DataDir         string        // where the embedded parts keep their files
	RedisURL        string        // hot state in Redis instead of memory
	NATSURL         string        // external NATS instead of the embedded server
	ShutdownTimeout time.Duration // how long shutdown may drain
	LogLevel        string
	// Secret is the HMAC secret for development tokens (UNDERSTUDY_SECRET only, never a
	// flag or file); empty means the one generated and kept in DataDir.
	Secret string
	// PublicKeys is a PEM file of Ed25519/RSA public keys for production tokens.
	PublicKeys string
	// MaxTokenLifetime bounds how long a token may be valid (exp - iat, and exp - now).
	MaxTokenLifetime time.Duration
	// AllowedOrigins lists the Origins a browser may open the driver socket from and
	// call the rider API from (CORS); empty allows same-host origins and non-browser
	// clients only on the socket, and no other origin on the API.
	AllowedOrigins []string
	// DriverGrace is how long a dropped driver keeps its session before going offline.
	DriverGrace time.Duration
	Rider       rider.Config
	Dispatch    dispatch.Config
	HTTP        HTTPConfig // timeouts and the connection cap
}

func defaultConfig() Config {
	return Config{
		Region:          "local",
		Addr:            "127.0.0.1:8080",
		DataDir:         "understudy-data",
		ShutdownTimeout: 10 * time.Second,
		DriverGrace:     60 * time.Second,
		Rider:           rider.DefaultConfig(),
		LogLevel:        "info",
		Dispatch:        dispatch.DefaultConfig(),
		HTTP:            defaultHTTPConfig(),

		MaxTokenLifetime: jwtauth.DefaultMaxLifetime,
	}
}

// fileConfig is the --config file's shape: JSON, durations as Go duration strings
// ("15s"). Absent fields keep their earlier value.
type fileConfig struct {
	Region          *string  `json:"region"`
	Addr            *string  `json:"addr"`
	DataDir         *string  `json:"data_dir"`
	Redis           *string  `json:"redis"`
	NATS            *string  `json:"nats"`
	LogLevel        *string  `json:"log_level"`
	PublicKeys      *string  `json:"jwt_public_keys"`
	MaxTokenLife    *string  `json:"max_token_lifetime"`
	AllowedOrigins  []string `json:"allowed_origins"`
	ShutdownTimeout *string  `json:"shutdown_timeout"`
	DriverGrace     *string  `json:"driver_grace"`
	H3Resolution    *int     `json:"h3_resolution"`
	MatchInterval   *string  `json:"match_interval"`
	OfferTimeout    *string  `json:"offer_timeout"`
	MaxSearch       *string  `json:"max_search"`
	SweepInterval   *string  `json:"sweep_interval"`
	MaxRadiusM      *float64 `json:"max_radius_m"`
	Candidates      *int     `json:"candidates"`
	MaxMissedOffers *int     `json:"max_missed_offers"`
	Fare            *struct {
		Currency    *string  `json:"currency"`
		Base        *int64   `json:"base"`
		PerKm       *int64   `json:"per_km"`
		PerMinute   *int64   `json:"per_minute"`
		Minimum     *int64   `json:"minimum"`
		AvgSpeedKmh *float64 `json:"avg_speed_kmh"`
		RouteFactor *float64 `json:"route_factor"`
		// CancellationFee is paid to the driver when the rider cancels after it arrived.
		CancellationFee *int64 `json:"cancellation_fee"`
	} `json:"fare"`
}

func (c *Config) applyFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	var f fileConfig
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	set(&c.Region, f.Region)
	set(&c.Addr, f.Addr)
	set(&c.DataDir, f.DataDir)
	set(&c.RedisURL, f.Redis)
	set(&c.NATSURL, f.NATS)
	set(&c.LogLevel, f.LogLevel)
	set(&c.PublicKeys, f.PublicKeys)
	if f.AllowedOrigins != nil {
		c.AllowedOrigins = f.AllowedOrigins
	}
	set(&c.Dispatch.H3Resolution, f.H3Resolution)
	set(&c.Dispatch.MaxRadiusM, f.MaxRadiusM)
	set(&c.Dispatch.Candidates, f.Candidates)
	set(&c.Dispatch.MaxMissedOffers, f.MaxMissedOffers)
	var errs []error
	for _, d := range []struct {
		dst *time.Duration
		src *string
		key string
	}{
		{&c.ShutdownTimeout, f.ShutdownTimeout, "shutdown_timeout"},
		{&c.DriverGrace, f.DriverGrace, "driver_grace"},
		{&c.MaxTokenLifetime, f.MaxTokenLife, "max_token_lifetime"},
		{&c.Dispatch.MatchInterval, f.MatchInterval, "match_interval"},
		{&c.Dispatch.OfferTimeout, f.OfferTimeout, "offer_timeout"},
		{&c.Dispatch.MaxSearch, f.MaxSearch, "max_search"},
		{&c.Dispatch.SweepInterval, f.SweepInterval, "sweep_interval"},
	} {
		if d.src == nil {
			continue
		}
		v, err := time.ParseDuration(*d.src)
		if err != nil {
			errs = append(errs, fmt.Errorf("config %s: %s: %w", path, d.key, err))
			continue
		}
		*d.dst = v
	}
	if f.Fare != nil {
		m := &c.Dispatch.Fare
		set(&m.Currency, f.Fare.Currency)
		set(&m.Base, f.Fare.Base)
		set(&m.PerKm, f.Fare.PerKm)
		set(&m.PerMinute, f.Fare.PerMinute)
		set(&m.Minimum, f.Fare.Minimum)
		set(&m.AvgSpeedKmh, f.Fare.AvgSpeedKmh)
		set(&m.RouteFactor, f.Fare.RouteFactor)
		set(&m.CancellationFee, f.Fare.CancellationFee)
	}
	return errors.Join(errs...)
}

func set[T any](dst *T, src *T) {
	if src != nil {
		*dst = *src
	}
}

// bind declares c's flags on fs; parsing them overwrites what defaults, file and
// environment set.
func (c *Config) bind(fs *flag.FlagSet) {
	fs.StringVar(&c.Region, "region", c.Region, "this region's `name`")
	fs.StringVar(&c.Addr, "addr", c.Addr, "HTTP listen `address`")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "`directory` for the embedded parts' files")
	fs.StringVar(&c.RedisURL, "redis", c.RedisURL, "Redis `URL` for hot state (default: in memory)")
	fs.StringVar(&c.NATSURL, "nats", c.NATSURL, "NATS `URL` for the durable log (default: embedded)")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.StringVar(&c.PublicKeys, "jwt-public-keys", c.PublicKeys, "PEM `file` of Ed25519/RSA keys that verify production tokens")
	fs.DurationVar(&c.MaxTokenLifetime, "max-token-lifetime", c.MaxTokenLifetime, "refuse tokens valid for longer than this (exp - iat, exp - now)")
	fs.Func("allowed-origin", "an Origin whose browser pages may open the driver socket and call the rider API (repeatable)", func(v string) error {
		c.AllowedOrigins = append(c.AllowedOrigins, v)
		return nil
	})
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "how long shutdown may drain")
	fs.DurationVar(&c.DriverGrace, "driver-grace", c.DriverGrace, "how long a dropped driver keeps its session before going offline")
	fs.Float64Var(&c.Rider.Rate, "rider-rate", c.Rider.Rate, "rider API requests per second per caller")
	fs.IntVar(&c.Rider.Burst, "rider-burst", c.Rider.Burst, "rider API burst per caller")
	fs.DurationVar(&c.Rider.IdempotencyTTL, "idempotency-ttl", c.Rider.IdempotencyTTL, "how long Idempotency-Keys are remembered")
	fs.DurationVar(&c.Rider.Heartbeat, "sse-heartbeat", c.Rider.Heartbeat, "event stream heartbeat interval")
	fs.DurationVar(&c.Rider.LocationInterval, "sse-location-interval", c.Rider.LocationInterval, "how often event streams send a moved driver's position")
	fs.IntVar(&c.Dispatch.H3Resolution, "h3-res", c.Dispatch.H3Resolution, "H3 `resolution` of the supply index")
	fs.DurationVar(&c.Dispatch.MatchInterval, "match-interval", c.Dispatch.MatchInterval, "batching window; 0 matches each request at once")
	fs.DurationVar(&c.Dispatch.OfferTimeout, "offer-timeout", c.Dispatch.OfferTimeout, "how long a driver has to answer an offer")
	fs.DurationVar(&c.Dispatch.MaxSearch, "max-search", c.Dispatch.MaxSearch, "how long a ride searches before no_driver")
	fs.DurationVar(&c.Dispatch.SweepInterval, "sweep-interval", c.Dispatch.SweepInterval, "how often replicas look for rides a dead replica left; 0 never")
	fs.IntVar(&c.Dispatch.MaxMissedOffers, "max-missed-offers", c.Dispatch.MaxMissedOffers, "take a driver offline after this many offers in a row expire unanswered; 0 never")
	fs.Float64Var(&c.Dispatch.MaxRadiusM, "max-radius", c.Dispatch.MaxRadiusM, "farthest pickup distance offered, in `metres`")
	c.HTTP.bind(fs)
}

// applyEnv reads UNDERSTUDY_<FLAG> for every flag of fs (dashes become underscores),
// before the command line is parsed.
func applyEnv(fs *flag.FlagSet, getenv func(string) string) error {
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		key := "UNDERSTUDY_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(key); v != "" {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", key, v, err))
			}
		}
	})
	return errors.Join(errs...)
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
	if c.DriverGrace <= 0 {
		errs = append(errs, fmt.Errorf("driver-grace %s: want > 0", c.DriverGrace))
	}
	if c.MaxTokenLifetime <= 0 {
		errs = append(errs, fmt.Errorf("max-token-lifetime %s: want > 0", c.MaxTokenLifetime))
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if c.Region == "" || strings.ContainsAny(c.Region, " :{}*") {
		errs = append(errs, fmt.Errorf("region %q: want a name without spaces, colons, braces or stars", c.Region))
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
	return errors.Join(errs...)
}

// loadConfig builds the configuration for args: defaults, file, environment, flags.
func loadConfig(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	cfg := defaultConfig()
	// The file comes before env and flags, so find --config first.
	pre := flag.NewFlagSet("serve", flag.ContinueOnError)
	pre.SetOutput(io.Discard)
	path := pre.String("config", getenv("UNDERSTUDY_CONFIG"), "")
	scratch := defaultConfig() // the real flags are parsed after the file is applied
	scratch.bind(pre)
	_ = pre.Parse(args) // errors are reported by the real parse below
	if *path != "" {
		if err := cfg.applyFile(*path); err != nil {
			return Config{}, err
		}
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.String("config", *path, "JSON configuration `file` (regions, timeouts, fares)")
	cfg.bind(fs)
	if err := applyEnv(fs, getenv); err != nil {
		return Config{}, err
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	cfg.Secret = getenv("UNDERSTUDY_SECRET")
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	return cfg, cfg.Validate()
}

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
