// Package prommetrics records the dispatch engine's measurements as Prometheus
// metrics named understudy_dispatch_*.
package prommetrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/understudy/understudy/dispatch"
)

var _ dispatch.Metrics = (*Metrics)(nil)

// Metrics implements dispatch.Metrics. Create it with New.
type Metrics struct {
	matchLatency prometheus.Histogram
	batchSeconds prometheus.Histogram
	batchRides   prometheus.Histogram
	offered      prometheus.Counter
	offers       *prometheus.CounterVec
	rides        *prometheus.CounterVec
	conflicts    prometheus.Counter
	fenced       prometheus.Counter
	inFlight     *prometheus.GaugeVec

	mu         sync.Mutex
	inFlightAt map[dispatch.AreaStatus]bool // the series InFlight has set
}

// New creates the dispatch metrics and registers them, with gauges that read the
// engine's supply and queue, on reg.
func New(reg prometheus.Registerer, e *dispatch.Engine) *Metrics {
	m := &Metrics{
		matchLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "understudy_dispatch_match_latency_seconds",
			Help:    "Time from a ride request to its first offer.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}),
		batchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "understudy_dispatch_batch_seconds",
			Help:    "Time to assign one batch of pending rides and send its offers.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		batchRides: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "understudy_dispatch_batch_rides",
			Help:    "Rides in one matching batch.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14),
		}),
		offered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "understudy_dispatch_offers_sent_total",
			Help: "Offers sent to drivers.",
		}),
		offers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "understudy_dispatch_offer_outcomes_total",
			Help: "Offers by how they ended: accepted, declined, expired or revoked.",
		}, []string{"outcome"}),
		rides: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "understudy_dispatch_rides_ended_total",
			Help: "Rides by final status.",
		}, []string{"status"}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "understudy_dispatch_conflicts_total",
			Help: "Commits that lost a race with a concurrent change of the same ride or driver (retried, or given up after 16 tries).",
		}),
		fenced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "understudy_dispatch_fenced_writes_total",
			Help: "Writes of this region the ride log refused because another region had taken the ride's area (a stale lease).",
		}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "understudy_dispatch_rides_in_flight",
			Help: "Rides not yet final in the areas this region serves, by area (empty outside a deployment) and status, as of the last sweep.",
		}, []string{"area", "status"}),
		inFlightAt: map[dispatch.AreaStatus]bool{},
	}
	reg.MustRegister(m.matchLatency, m.batchSeconds, m.batchRides, m.offered, m.offers, m.rides, m.conflicts, m.fenced, m.inFlight,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "understudy_dispatch_available_drivers",
			Help: "Drivers in the supply index, ready for offers.",
		}, func() float64 { return float64(e.Available()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "understudy_dispatch_pending_rides",
			Help: "Rides waiting for an offer.",
		}, func() float64 { return float64(e.Pending()) }),
	)
	return m
}

// MatchLatency implements dispatch.Metrics.
func (m *Metrics) MatchLatency(d time.Duration) { m.matchLatency.Observe(d.Seconds()) }

// BatchSolved implements dispatch.Metrics.
func (m *Metrics) BatchSolved(rides, offered int, d time.Duration) {
	m.batchSeconds.Observe(d.Seconds())
	m.batchRides.Observe(float64(rides))
	m.offered.Add(float64(offered))
}

// OfferOutcome implements dispatch.Metrics.
func (m *Metrics) OfferOutcome(outcome string) { m.offers.WithLabelValues(outcome).Inc() }

// RideEnded implements dispatch.Metrics.
func (m *Metrics) RideEnded(status dispatch.RideStatus) {
	m.rides.WithLabelValues(string(status)).Inc()
}

// Conflict implements dispatch.Metrics.
func (m *Metrics) Conflict() { m.conflicts.Inc() }

// FencedWrite implements dispatch.Metrics.
func (m *Metrics) FencedWrite() { m.fenced.Inc() }

// InFlight implements dispatch.Metrics: a series counted before and missing now is
// set to 0, so a graph shows an area emptied (or handed over) rather than a gap.
func (m *Metrics) InFlight(counts map[dispatch.AreaStatus]int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := range m.inFlightAt {
		if _, ok := counts[k]; !ok {
			m.inFlight.WithLabelValues(k.Area, string(k.Status)).Set(0)
		}
	}
	for k, n := range counts {
		m.inFlightAt[k] = true
		m.inFlight.WithLabelValues(k.Area, string(k.Status)).Set(float64(n))
	}
}
