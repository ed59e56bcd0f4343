package dispatch

import (
	"errors"
	"fmt"
	"time"
)

// Config tunes one region's dispatch. The zero value is not usable: start from
// DefaultConfig and override.
type Config struct {
	// H3Resolution of the supply index (0-15).
	H3Resolution int `json:"h3_resolution"`
	// MatchInterval is how long requests queue before a batch is assigned; zero
	// matches each request as soon as it arrives.
	MatchInterval time.Duration `json:"match_interval"`
	// OfferTimeout is how long a driver has to answer an offer.
	OfferTimeout time.Duration `json:"offer_timeout"`
	// MaxSearch is how long a ride may search before it ends as no_driver.
	MaxSearch time.Duration `json:"max_search"`
	// MaxRadiusM is the farthest pickup distance, in metres, a driver is offered.
	MaxRadiusM float64 `json:"max_radius_m"`
	// Candidates is how many nearest drivers per ride the batch solver considers.
	Candidates int `json:"candidates"`
	// MaxMissedOffers takes a driver offline after that many offers in a row expired
	// unanswered; zero never does.
	MaxMissedOffers int `json:"max_missed_offers"`
	// Fare prices rides and estimates pickup times.
	Fare FareModel `json:"fare"`
	// SweepInterval is how often the engine reads every active ride from the Store to
	// take over what no replica of the region is handling: offers past their expiry,
	// searches past their deadline, and searching rides in nobody's queue (their
	// replica died). Zero disables it, which only a lone engine can afford.
	SweepInterval time.Duration `json:"sweep_interval"`
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

// Validate reports every setting that is out of range.
func (c Config) Validate() error {
	var errs []error
	if c.H3Resolution < 0 || c.H3Resolution > 15 {
		errs = append(errs, fmt.Errorf("h3_resolution %d: want 0 to 15", c.H3Resolution))
	}
	if c.MatchInterval < 0 {
		errs = append(errs, fmt.Errorf("match_interval %s: want >= 0", c.MatchInterval))
	}
	if c.OfferTimeout <= 0 {
		errs = append(errs, fmt.Errorf("offer_timeout %s: want > 0", c.OfferTimeout))
	}
	if c.MaxSearch <= 0 {
		errs = append(errs, fmt.Errorf("max_search %s: want > 0", c.MaxSearch))
	}
	if !(c.MaxRadiusM > 0) {
		errs = append(errs, fmt.Errorf("max_radius_m %v: want > 0", c.MaxRadiusM))
	}
	if c.MaxMissedOffers < 0 {
		errs = append(errs, fmt.Errorf("max_missed_offers %d: want >= 0", c.MaxMissedOffers))
	}
	if c.Candidates < 1 || c.Candidates > 100 {
		errs = append(errs, fmt.Errorf("candidates %d: want 1 to 100", c.Candidates))
	}
	if c.SweepInterval < 0 {
		errs = append(errs, fmt.Errorf("sweep_interval %s: want >= 0", c.SweepInterval))
	}
	if err := c.Fare.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
