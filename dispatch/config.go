package dispatch

import (
	"errors"
	"flag"
	"fmt"
	"time"
)

// Config tunes one region's dispatch. The zero value is not usable: start from
// DefaultConfig and override. Each setting has a name (RegisterFlags) that is also its
// flag, environment variable and config-file key in `understudy serve`, and that
// Validate's errors use.
type Config struct {
	// H3Resolution of the supply index (0-15).
	H3Resolution int
	// MatchInterval is how long requests queue before a batch is assigned; zero
	// matches each request as soon as it arrives.
	MatchInterval time.Duration
	// OfferTimeout is how long a driver has to answer an offer.
	OfferTimeout time.Duration
	// MaxSearch is how long a ride may search before it ends as no_driver.
	MaxSearch time.Duration
	// MaxRadiusM is the farthest pickup distance, in metres, a driver is offered.
	MaxRadiusM float64
	// Candidates is how many nearest drivers per ride the batch solver considers.
	Candidates int
	// MaxMissedOffers takes a driver offline after that many offers in a row expired
	// unanswered; zero never does.
	MaxMissedOffers int
	// Fare prices rides and estimates pickup times.
	Fare FareModel
	// SweepInterval is how often the engine reads every active ride from the Store to
	// take over what no replica of the region is handling: offers past their expiry,
	// searches past their deadline, and searching rides in nobody's queue (their
	// replica died). Zero disables it, which only a lone engine can afford.
	SweepInterval time.Duration
}

// DefaultConfig returns the defaults the contract and the docs describe.
func DefaultConfig() Config {
	return Config{
		H3Resolution:    9,
		MatchInterval:   100 * time.Millisecond,
		OfferTimeout:    15 * time.Second,
		MaxSearch:       2 * time.Minute,
		MaxRadiusM:      3000,
		Candidates:      8,
		MaxMissedOffers: 3,
		Fare:            DefaultFareModel(),
		SweepInterval:   2 * time.Second,
	}
}

// RegisterFlags declares each setting on fs under its name, with c's values as the
// defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.H3Resolution, "h3-res", c.H3Resolution, "H3 `resolution` of the supply index (0-15)")
	fs.DurationVar(&c.MatchInterval, "match-interval", c.MatchInterval, "batching window; 0 matches each request at once")
	fs.DurationVar(&c.OfferTimeout, "offer-timeout", c.OfferTimeout, "how long a driver has to answer an offer")
	fs.DurationVar(&c.MaxSearch, "max-search", c.MaxSearch, "how long a ride searches before no_driver")
	fs.Float64Var(&c.MaxRadiusM, "max-radius", c.MaxRadiusM, "farthest pickup distance offered, in `metres`")
	fs.IntVar(&c.Candidates, "candidates", c.Candidates, "nearest drivers per ride the batch solver considers (1-100)")
	fs.IntVar(&c.MaxMissedOffers, "max-missed-offers", c.MaxMissedOffers, "take a driver offline after this many offers in a row expire unanswered; 0 never")
	fs.DurationVar(&c.SweepInterval, "sweep-interval", c.SweepInterval, "how often replicas look for rides a dead replica left; 0 never")
	c.Fare.RegisterFlags(fs)
}

// Validate reports every setting that is out of range, by name.
func (c Config) Validate() error {
	errs := PositiveDurations(
		Duration{Name: "offer-timeout", Value: c.OfferTimeout},
		Duration{Name: "max-search", Value: c.MaxSearch},
	)
	if c.H3Resolution < 0 || c.H3Resolution > 15 {
		errs = append(errs, fmt.Errorf("h3-res %d: want 0 to 15", c.H3Resolution))
	}
	if c.MatchInterval < 0 {
		errs = append(errs, fmt.Errorf("match-interval %s: want >= 0", c.MatchInterval))
	}
	if !(c.MaxRadiusM > 0) {
		errs = append(errs, fmt.Errorf("max-radius %v: want > 0", c.MaxRadiusM))
	}
	if c.MaxMissedOffers < 0 {
		errs = append(errs, fmt.Errorf("max-missed-offers %d: want >= 0", c.MaxMissedOffers))
	}
	if c.Candidates < 1 || c.Candidates > 100 {
		errs = append(errs, fmt.Errorf("candidates %d: want 1 to 100", c.Candidates))
	}
	if c.SweepInterval < 0 {
		errs = append(errs, fmt.Errorf("sweep-interval %s: want >= 0", c.SweepInterval))
	}
	if err := c.Fare.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Duration is one duration setting by its name, for PositiveDurations.
type Duration struct {
	Name  string
	Value time.Duration
}

// PositiveDurations returns an error naming each setting that is not above zero: the
// check every package's Config.Validate makes of its timeouts and intervals.
func PositiveDurations(settings ...Duration) []error {
	var errs []error
	for _, d := range settings {
		if d.Value <= 0 {
			errs = append(errs, fmt.Errorf("%s %s: want > 0", d.Name, d.Value))
		}
	}
	return errs
}
