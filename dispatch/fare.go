package dispatch

import (
	"errors"
	"fmt"
	"math"
)

// FareModel prices a ride from its estimated distance and duration, and turns a
// pickup distance into an ETA. Distances are great-circle distances stretched by
// RouteFactor, a stand-in for road distance until a router is wired in.
type FareModel struct {
	Currency    string  `json:"currency"`      // ISO 4217, e.g. KRW
	Base        int64   `json:"base"`          // flag fall, minor units
	PerKm       int64   `json:"per_km"`        // minor units per km
	PerMinute   int64   `json:"per_minute"`    // minor units per minute
	Minimum     int64   `json:"minimum"`       // lowest fare
	AvgSpeedKmh float64 `json:"avg_speed_kmh"` // city average, for durations and ETAs
	RouteFactor float64 `json:"route_factor"`  // road distance / straight-line distance
	// CancellationFee is paid to the driver, through the ledger, when the rider
	// cancels after the driver arrived; minor units, 0 for none.
	CancellationFee int64 `json:"cancellation_fee"`
}

// DefaultFareModel is a Seoul-like taxi tariff in KRW.
func DefaultFareModel() FareModel {
	return FareModel{Currency: "KRW", Base: 4800, PerKm: 760, PerMinute: 100, Minimum: 4800,
		AvgSpeedKmh: 24, RouteFactor: 1.3, CancellationFee: 3000}
}

// Validate reports settings that would price nonsense.
func (m FareModel) Validate() error {
	var errs []error
	if !isCurrencyCode(m.Currency) {
		errs = append(errs, fmt.Errorf("fare.currency %q: want a 3-letter ISO 4217 code", m.Currency))
	}
	if m.Base < 0 || m.PerKm < 0 || m.PerMinute < 0 || m.Minimum < 0 || m.CancellationFee < 0 {
		errs = append(errs, errors.New("fare amounts must not be negative"))
	}
	if !(m.AvgSpeedKmh > 0) {
		errs = append(errs, fmt.Errorf("fare.avg_speed_kmh %v: want > 0", m.AvgSpeedKmh))
	}
	if !(m.RouteFactor >= 1) {
		errs = append(errs, fmt.Errorf("fare.route_factor %v: want >= 1", m.RouteFactor))
	}
	return errors.Join(errs...)
}

// RouteM is the estimated road distance between a and b in metres.
func (m FareModel) RouteM(a, b Point) float64 { return DistanceM(a, b) * m.RouteFactor }

// DurationS is the estimated driving time over routeM metres, in seconds.
func (m FareModel) DurationS(routeM float64) float64 { return routeM / (m.AvgSpeedKmh / 3.6) }

// Price is the fare of a trip of routeM metres.
func (m FareModel) Price(routeM float64) Money {
	amount := float64(m.Base) + float64(m.PerKm)*routeM/1000 + float64(m.PerMinute)*m.DurationS(routeM)/60
	a := int64(math.Round(amount))
	if a < m.Minimum {
		a = m.Minimum
	}
	return Money{Amount: a, Currency: m.Currency}
}

// Estimate is a quote for a ride that creates nothing.
type Estimate struct {
	Fare Money `json:"fare"`
	// PickupETAS is the nearest available driver's estimated time to the pickup in
	// seconds, nil when no driver is within the search radius.
	PickupETAS *int    `json:"pickup_eta_s"`
	DistanceM  float64 `json:"distance_m"`
}

func isCurrencyCode(s string) bool {
	if len(s) != 3 {
		return false
	}
	for _, c := range s {
		if c < 'A' || c > 'Z' {
			return false
		}
	}
	return true
}
