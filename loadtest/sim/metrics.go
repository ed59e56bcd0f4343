package sim

import (
	"math"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/understudy/understudy/loadtest"
)

// metrics holds the samples of every metric of loadtest/scenarios.json.
type metrics struct {
	defs     []loadtest.Metric
	trends   map[string]*trend
	rates    map[string]*rate
	counters map[string]*atomic.Int64
}

func newMetrics(defs []loadtest.Metric) *metrics {
	m := &metrics{defs: defs, trends: map[string]*trend{}, rates: map[string]*rate{}, counters: map[string]*atomic.Int64{}}
	for _, d := range defs {
		switch d.Kind {
		case loadtest.Trend:
			m.trends[d.Name] = &trend{}
		case loadtest.Rate:
			m.rates[d.Name] = &rate{}
		default:
			m.counters[d.Name] = &atomic.Int64{}
		}
	}
	return m
}

// trend returns the trend called name; the names are those of scenarios.json, so an
// unknown one is a bug in this package.
func (m *metrics) trend(name string) *trend { return must(m.trends, name) }
func (m *metrics) rate(name string) *rate   { return must(m.rates, name) }
func (m *metrics) add(name string, n int64) { must(m.counters, name).Add(n) }
func (m *metrics) count(name string) int64  { return must(m.counters, name).Load() }

func must[V any](m map[string]*V, name string) *V {
	v, ok := m[name]
	if !ok {
		panic("sim: metric " + name + " is not in loadtest/scenarios.json")
	}
	return v
}

// trend is a latency distribution in milliseconds: every sample of the run, and those
// since the last progress line.
type trend struct {
	mu     sync.Mutex
	all    []float64
	window []float64
}

func (t *trend) add(ms float64) {
	t.mu.Lock()
	t.all = append(t.all, ms)
	t.window = append(t.window, ms)
	t.mu.Unlock()
}

// takeWindow returns the samples since the last call, sorted.
func (t *trend) takeWindow() []float64 {
	t.mu.Lock()
	w := t.window
	t.window = nil
	t.mu.Unlock()
	slices.Sort(w)
	return w
}

func (t *trend) sorted() []float64 {
	t.mu.Lock()
	out := slices.Clone(t.all)
	t.mu.Unlock()
	slices.Sort(out)
	return out
}

// rate is a share of samples that are true.
type rate struct{ trues, total atomic.Int64 }

func (r *rate) add(ok bool) {
	if ok {
		r.trues.Add(1)
	}
	r.total.Add(1)
}

func (r *rate) value() float64 {
	n := r.total.Load()
	if n == 0 {
		return math.NaN()
	}
	return float64(r.trues.Load()) / float64(n)
}

// Stat is one metric in the summary.
type Stat struct {
	Kind  string  `json:"kind"`
	Count int64   `json:"count"` // samples (trend, rate) or the counter's value
	Rate  float64 `json:"rate,omitempty"`
	// Per second over the run (load and drain), counters only.
	PerS float64 `json:"per_s,omitempty"`
	// Trends, in milliseconds.
	Min float64 `json:"min,omitempty"`
	Avg float64 `json:"avg,omitempty"`
	Med float64 `json:"med,omitempty"`
	P90 float64 `json:"p90,omitempty"`
	P95 float64 `json:"p95,omitempty"`
	P99 float64 `json:"p99,omitempty"`
	Max float64 `json:"max,omitempty"`

	sorted []float64
}

func (m *metrics) stats(seconds float64) map[string]Stat {
	out := map[string]Stat{}
	for _, d := range m.defs {
		s := Stat{Kind: d.Kind}
		switch d.Kind {
		case loadtest.Trend:
			v := m.trend(d.Name).sorted()
			s.Count, s.sorted = int64(len(v)), v
			if len(v) > 0 {
				sum := 0.0
				for _, x := range v {
					sum += x
				}
				s.Min, s.Max, s.Avg = v[0], v[len(v)-1], sum/float64(len(v))
				s.Med = loadtest.Percentile(v, 50)
				s.P90, s.P95, s.P99 = loadtest.Percentile(v, 90), loadtest.Percentile(v, 95), loadtest.Percentile(v, 99)
			}
		case loadtest.Rate:
			r := m.rate(d.Name)
			s.Count = r.total.Load()
			if s.Count > 0 {
				s.Rate = r.value()
			}
		default:
			s.Count = m.count(d.Name)
			if seconds > 0 {
				s.PerS = float64(s.Count) / seconds
			}
		}
		out[d.Name] = s
	}
	return out
}

// value is the aggregate a threshold checks; ok is false when the metric has no
// samples (k6 then does not fail the threshold either).
func (s Stat) value(t loadtest.Threshold) (float64, bool) {
	switch t.Agg {
	case "count":
		return float64(s.Count), true
	case "rate":
		if s.Kind == loadtest.Counter {
			return s.PerS, true
		}
		return s.Rate, s.Count > 0
	}
	if s.Count == 0 {
		return 0, false
	}
	switch t.Agg {
	case "p":
		return loadtest.Percentile(s.sorted, t.P), true
	case "avg":
		return s.Avg, true
	case "min":
		return s.Min, true
	case "max":
		return s.Max, true
	case "med":
		return s.Med, true
	}
	return 0, false
}
