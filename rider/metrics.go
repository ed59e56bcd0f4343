package rider

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics records the rider API's measurements as Prometheus metrics named
// understudy_rider_*. A nil *Metrics records nothing.
type Metrics struct {
	requests    *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	subscribers prometheus.Gauge
	dropped     prometheus.Counter
	idem        *prometheus.CounterVec
}

// NewMetrics creates the rider metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "understudy_rider_requests_total",
			Help: "Rider API requests by route and response status.",
		}, []string{"route", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "understudy_rider_request_duration_seconds",
			Help:    "Rider API response time by route (event streams excluded: they last as long as the ride).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route"}),
		subscribers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "understudy_rider_sse_subscribers",
			Help: "Open ride event streams.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "understudy_rider_sse_dropped_events_total",
			Help: "Ride changes dropped because an event stream's buffer was full (a newer state followed).",
		}),
		idem: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "understudy_rider_ride_requests_total",
			Help: "Ride requests by idempotency outcome: created, replayed, conflict, in_flight, or none (no key).",
		}, []string{"outcome"}),
	}
	reg.MustRegister(m.requests, m.latency, m.subscribers, m.dropped, m.idem)
	return m
}

func (m *Metrics) observe(route string, status int, took time.Duration, streaming bool) {
	if m == nil {
		return
	}
	if status == 0 { // the handler wrote nothing: net/http answers 200
		status = 200
	}
	m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	if !streaming {
		m.latency.WithLabelValues(route).Observe(took.Seconds())
	}
}

func (m *Metrics) subscribed(delta float64) {
	if m != nil {
		m.subscribers.Add(delta)
	}
}

func (m *Metrics) droppedEvent() {
	if m != nil {
		m.dropped.Inc()
	}
}

func (m *Metrics) idempotency(outcome string) {
	if m != nil {
		m.idem.WithLabelValues(outcome).Inc()
	}
}
