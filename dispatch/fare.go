package dispatch

import (
	"errors"
	"flag"
	"fmt"
	"math"
)

// FareModel prices a ride from its estimated distance and duration, and turns a
// pickup distance into an ETA. Distances are great-circle distances stretched by
// RouteFactor, a stand-in for road distance until a router is wired in.
type FareModel struct {
	Currency    string  // ISO 4217, e.g. KRW
	Base        int64   // flag fall, minor units
	PerKm       int64   // minor units per km
	PerMinute   int64   // minor units per minute
	Minimum     int64   // lowest fare
	AvgSpeedKmh float64 // city average, for durations and ETAs
	RouteFactor float64 // road distance / straight-line distance
	// CancellationFee is paid to the driver, through the ledger, when the rider
	// cancels after the driver arrived; minor units, 0 for none.
	CancellationFee int64
}

// DefaultFareModel is a Seoul-like taxi tariff in KRW.
func DefaultFareModel() FareModel {
	return FareModel{Currency: "KRW", Base: 4800, PerKm: 760, PerMinute: 100, Minimum: 4800,
		AvgSpeedKmh: 24, RouteFactor: 1.3, CancellationFee: 3000}
}

// RegisterFlags declares each part of the model on fs as a setting named fare-*, with
// m's values as the defaults.
func (m *FareModel) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&m.Currency, "fare-currency", m.Currency, "ISO 4217 `code` of every fare")
	fs.Int64Var(&m.Base, "fare-base", m.Base, "flag fall, in minor units")
	fs.Int64Var(&m.PerKm, "fare-per-km", m.PerKm, "fare per km of estimated route, in minor units")
	fs.Int64Var(&m.PerMinute, "fare-per-minute", m.PerMinute, "fare per minute of estimated driving, in minor units")
	fs.Int64Var(&m.Minimum, "fare-minimum", m.Minimum, "lowest fare, in minor units")
	fs.Float64Var(&m.AvgSpeedKmh, "fare-avg-speed-kmh", m.AvgSpeedKmh, "average city speed in km/h, for durations and pickup ETAs")
	fs.Float64Var(&m.RouteFactor, "fare-route-factor", m.RouteFactor, "road distance over straight-line distance (>= 1)")
	fs.Int64Var(&m.CancellationFee, "fare-cancellation-fee", m.CancellationFee, "paid to the driver when the rider cancels after it arrived, in minor units; 0 none")
}

// Validate reports settings that would price nonsense, by name.
func (m FareModel) Validate() error {
	var errs []error
	if !isCurrencyCode(m.Currency) {
		errs = append(errs, fmt.Errorf("fare-currency %q: want a 3-letter ISO 4217 code", m.Currency))
	}
	for _, a := range []struct {
		name string
		v    int64
	}{
		{"fare-base", m.Base}, {"fare-per-km", m.PerKm}, {"fare-per-minute", m.PerMinute},
		{"fare-minimum", m.Minimum}, {"fare-cancellation-fee", m.CancellationFee},
	} {
		if a.v < 0 {
			errs = append(errs, fmt.Errorf("%s %d: want >= 0", a.name, a.v))
		}
	}
	if !(m.AvgSpeedKmh > 0) {
		errs = append(errs, fmt.Errorf("fare-avg-speed-kmh %v: want > 0", m.AvgSpeedKmh))
	}
	if !(m.RouteFactor >= 1) {
		errs = append(errs, fmt.Errorf("fare-route-factor %v: want >= 1", m.RouteFactor))
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
	Fare Money
	// PickupETAS is the nearest available driver's estimated time to the pickup in
	// seconds, nil when no driver is within the search radius.
	PickupETAS *int
	DistanceM  float64
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
