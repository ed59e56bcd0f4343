// Package prommetrics records the dispatch engine's measurements as Prometheus
// metrics named understudy_dispatch_*.
package prommetrics

import (
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
	}
	reg.MustRegister(m.matchLatency, m.batchSeconds, m.batchRides, m.offered, m.offers, m.rides, m.conflicts, m.fenced,
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
