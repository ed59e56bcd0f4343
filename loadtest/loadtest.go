// Package loadtest holds the one definition of the load tests: the scenarios, the
// metrics they report and the thresholds that fail a run, in scenarios.json. The Go
// simulator (loadtest/sim, `understudy sim`) reads it from here; the k6 scripts in
// this folder open() the same file, so both run the same scenarios under the same
// names and fail on the same thresholds.
package loadtest

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
)

// scenariosJSON is scenarios.json, as the k6 scripts read it.
//
//go:embed scenarios.json
var scenariosJSON []byte

// File is scenarios.json.
type File struct {
	K6Version  string              `json:"k6_version"`
	Metrics    []Metric            `json:"metrics"`
	Thresholds map[string][]string `json:"thresholds"`
	Cities     map[string]City     `json:"cities"`
	Scenarios  map[string]Scenario `json:"scenarios"`
}

// Metric is one metric every run reports, under the same name in k6 and the simulator.
type Metric struct {
	Name string `json:"name"`
	// Kind is k6's metric type: trend (Unit ms), rate (a share of samples that are
	// true) or counter.
	Kind string `json:"kind"`
	Unit string `json:"unit,omitempty"`
	Help string `json:"help"`
}

// Metric kinds.
const (
	Trend   = "trend"
	Rate    = "rate"
	Counter = "counter"
)

// City is where a scenario's drivers drive and riders ride: hubs, and how far from
// them (RadiusM) positions go.
type City struct {
	RadiusM float64 `json:"radius_m"`
	Hubs    []Hub   `json:"hubs"`
}

// Hub is a centre of demand and supply in a city.
type Hub struct {
	Name string  `json:"name"`
	Lat  float64 `json:"lat"`
	Lng  float64 `json:"lng"`
}

// Scenario is one named load: a fleet and a rider arrival rate, and how the drivers
// and riders behave. Durations are seconds.
type Scenario struct {
	About             string     `json:"about"`
	City              string     `json:"city"`
	Drivers           int        `json:"drivers"`
	RidersPerS        float64    `json:"riders_per_s"`
	DurationS         float64    `json:"duration_s"`
	RampS             float64    `json:"ramp_s"`              // drivers connect evenly over this
	LocationIntervalS float64    `json:"location_interval_s"` // each driver's location period
	DropPerMin        float64    `json:"drop_per_min"`        // chance a driver drops its socket each minute (it resumes)
	DeclineShare      float64    `json:"decline_share"`       // offers declined
	IgnoreShare       float64    `json:"ignore_share"`        // offers left to expire
	CancelShare       float64    `json:"cancel_share"`        // rides their rider cancels
	PickupS           [2]float64 `json:"pickup_s"`            // drive to the pickup: min, max
	TripS             [2]float64 `json:"trip_s"`              // the trip itself: min, max
	DrainS            float64    `json:"drain_s"`             // after the arrivals stop, how long rides may take to end
	Moves             []Move     `json:"moves"`
}

// Move is an admin hand-over of an area (POST /v1/admin/areas/{name}/move) AtS
// seconds into the run.
type Move struct {
	AtS  float64 `json:"at_s"`
	Area string  `json:"area"`
	To   string  `json:"to"`
}

// Load parses the embedded scenarios.json and checks it.
func Load() (File, error) {
	var f File
	if err := json.Unmarshal(scenariosJSON, &f); err != nil {
		return f, fmt.Errorf("loadtest/scenarios.json: %w", err)
	}
	return f, f.Validate()
}

// Validate checks that every threshold names a metric and parses, and that every
// scenario is in range and in a known city.
func (f File) Validate() error {
	for name, exprs := range f.Thresholds {
		m, ok := f.Metric(name)
		if !ok {
			return fmt.Errorf("threshold on unknown metric %q", name)
		}
		for _, e := range exprs {
			if _, err := ParseThreshold(m.Kind, e); err != nil {
				return fmt.Errorf("threshold %s %q: %w", name, e, err)
			}
		}
	}
	for name, c := range f.Cities {
		if len(c.Hubs) == 0 || !(c.RadiusM > 0) {
			return fmt.Errorf("city %q: want hubs and a positive radius_m", name)
		}
	}
	for name, s := range f.Scenarios {
		if err := s.Validate(f); err != nil {
			return fmt.Errorf("scenario %q: %w", name, err)
		}
	}
	return nil
}

// Validate reports the first parameter of s out of range.
func (s Scenario) Validate(f File) error {
	if _, ok := f.Cities[s.City]; !ok {
		return fmt.Errorf("unknown city %q (have %v)", s.City, f.CityNames())
	}
	switch {
	case s.Drivers < 0:
		return fmt.Errorf("drivers %d: want >= 0", s.Drivers)
	case s.RidersPerS < 0:
		return fmt.Errorf("riders_per_s %v: want >= 0", s.RidersPerS)
	case !(s.DurationS > 0):
		return fmt.Errorf("duration_s %v: want > 0", s.DurationS)
	case s.RampS < 0 || s.DrainS < 0:
		return fmt.Errorf("ramp_s and drain_s: want >= 0")
	case s.Drivers > 0 && !(s.LocationIntervalS >= 0.1):
		return fmt.Errorf("location_interval_s %v: want >= 0.1", s.LocationIntervalS)
	case s.PickupS[0] < 0 || s.PickupS[1] < s.PickupS[0] || s.TripS[0] < 0 || s.TripS[1] < s.TripS[0]:
		return fmt.Errorf("pickup_s and trip_s: want [min, max] with 0 <= min <= max")
	}
	for _, p := range []struct {
		name string
		v    float64
	}{{"drop_per_min", s.DropPerMin}, {"decline_share", s.DeclineShare}, {"ignore_share", s.IgnoreShare}, {"cancel_share", s.CancelShare}} {
		if !(p.v >= 0 && p.v <= 1) {
			return fmt.Errorf("%s %v: want a share in [0, 1]", p.name, p.v)
		}
	}
	if s.DeclineShare+s.IgnoreShare > 1 {
		return fmt.Errorf("decline_share + ignore_share > 1")
	}
	for _, m := range s.Moves {
		if m.Area == "" || m.To == "" || m.AtS < 0 {
			return fmt.Errorf("move %+v: want area, to and at_s >= 0", m)
		}
	}
	return nil
}

// Metric returns the metric called name.
func (f File) Metric(name string) (Metric, bool) {
	i := slices.IndexFunc(f.Metrics, func(m Metric) bool { return m.Name == name })
	if i < 0 {
		return Metric{}, false
	}
	return f.Metrics[i], true
}

// ScenarioNames lists the scenarios, sorted.
func (f File) ScenarioNames() []string { return sortedKeys(f.Scenarios) }

// CityNames lists the cities, sorted.
func (f File) CityNames() []string { return sortedKeys(f.Cities) }

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Threshold is one parsed k6 threshold expression such as "p(99)<3000",
// "rate>0.9" or "count<1".
type Threshold struct {
	Expr  string
	Agg   string  // p, avg, min, max, med, rate, count
	P     float64 // the percentile, for Agg p
	Op    string  // <, <=, >, >=, ==, !=
	Value float64
}

var thresholdRE = regexp.MustCompile(`^\s*(p\(\s*([0-9.]+)\s*\)|avg|min|max|med|rate|count)\s*(<=|>=|==|!=|<|>)\s*(-?[0-9.]+)\s*$`)

// ParseThreshold parses expr, as k6 does, for a metric of kind.
func ParseThreshold(kind, expr string) (Threshold, error) {
	m := thresholdRE.FindStringSubmatch(expr)
	if m == nil {
		return Threshold{}, fmt.Errorf("want AGG OP NUMBER, AGG one of p(N), avg, min, max, med, rate, count")
	}
	t := Threshold{Expr: expr, Agg: m[1], Op: m[3]}
	if m[2] != "" {
		t.Agg = "p"
		p, err := strconv.ParseFloat(m[2], 64)
		if err != nil || p < 0 || p > 100 {
			return t, fmt.Errorf("percentile %q: want 0 to 100", m[2])
		}
		t.P = p
	}
	v, err := strconv.ParseFloat(m[4], 64)
	if err != nil {
		return t, fmt.Errorf("value %q: %w", m[4], err)
	}
	t.Value = v
	ok := map[string][]string{Trend: {"p", "avg", "min", "max", "med"}, Rate: {"rate"}, Counter: {"count", "rate"}}[kind]
	if !slices.Contains(ok, t.Agg) {
		return t, fmt.Errorf("%s does not apply to a %s (k6 allows %v)", t.Agg, kind, ok)
	}
	return t, nil
}

// Holds reports whether got satisfies the threshold.
func (t Threshold) Holds(got float64) bool {
	switch t.Op {
	case "<":
		return got < t.Value
	case "<=":
		return got <= t.Value
	case ">":
		return got > t.Value
	case ">=":
		return got >= t.Value
	case "==":
		return got == t.Value
	case "!=":
		return got != t.Value
	}
	return false
}

// Percentile returns the p-th percentile (0 to 100) of sorted samples, interpolated
// between the nearest ranks as k6 does; NaN when there are none.
func Percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	if len(sorted) == 1 {
		return sorted[0]
	}
	r := p / 100 * float64(len(sorted)-1)
	lo := int(math.Floor(r))
	if lo >= len(sorted)-1 {
		return sorted[len(sorted)-1]
	}
	return sorted[lo] + (r-float64(lo))*(sorted[lo+1]-sorted[lo])
}
