package natsbus

import "github.com/prometheus/client_golang/prometheus"

// Metrics counts the bus's traffic as understudy_bus_* series. A nil *Metrics records
// nothing.
type Metrics struct {
	sentEvents     prometheus.Counter
	receivedEvents prometheus.Counter
	droppedEvents  prometheus.Counter
}

// NewMetrics creates the bus's series and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		sentEvents: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "understudy_bus_events_sent_total",
			Help: "Engine events published to the region's other replicas.",
		}),
		receivedEvents: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "understudy_bus_events_received_total",
			Help: "Engine events received from the region's other replicas.",
		}),
		droppedEvents: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "understudy_bus_events_dropped_total",
			Help: "Engine events not published: the send queue was full, the bus closed, or NATS refused them.",
		}),
	}
	reg.MustRegister(m.sentEvents, m.receivedEvents, m.droppedEvents)
	return m
}

func (m *Metrics) sent(n int) {
	if m != nil {
		m.sentEvents.Add(float64(n))
	}
}

func (m *Metrics) received(n int) {
	if m != nil {
		m.receivedEvents.Add(float64(n))
	}
}

func (m *Metrics) dropped(n int) {
	if m != nil {
		m.droppedEvents.Add(float64(n))
	}
}
