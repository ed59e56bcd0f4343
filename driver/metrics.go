package driver

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/understudy/understudy/dispatch"
)

// Metrics counts what the gateway does, as understudy_driver_* series. A nil *Metrics
// records nothing.
type Metrics struct {
	connected prometheus.Gauge
	framesIn  *prometheus.CounterVec
	framesOut *prometheus.CounterVec
	closes    *prometheus.CounterVec
	refused   *prometheus.CounterVec
	stales    *prometheus.CounterVec
	frameRefs *prometheus.CounterVec
}

// NewMetrics creates the gateway's series and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "understudy_driver_connected",
			Help: "Driver sockets open now.",
		}),
		framesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "understudy_driver_frames_in_total",
			Help: "Frames received from drivers, by type (invalid: undecodable or unknown type).",
		}, []string{"type"}),
		framesOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "understudy_driver_frames_out_total",
			Help: "Frames written to drivers, by type.",
		}, []string{"type"}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "understudy_driver_closes_total",
			Help: "Driver sockets ended, by the websocket close code that ended them (1006: dropped without a close frame).",
		}, []string{"code"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "understudy_driver_handshakes_refused_total",
			Help: "Socket handshakes refused before the upgrade, by problem code.",
		}, []string{"code"}),
		stales: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "understudy_driver_stale_events_total",
			Help: "Ride events not sent to a driver, by type, because it had been told a newer version of the ride (ride: a trip step answered with the newer ride).",
		}, []string{"type"}),
		frameRefs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "understudy_driver_frames_refused_total",
			Help: "Frames refused with an error frame or a close, by frame type (invalid: undecodable; ping, pong, binary) and error code.",
		}, []string{"type", "code"}),
	}
	reg.MustRegister(m.connected, m.framesIn, m.framesOut, m.closes, m.refused, m.stales, m.frameRefs)
	return m
}

func (m *Metrics) connect(delta float64) {
	if m != nil {
		m.connected.Add(delta)
	}
}

func (m *Metrics) frameIn(typ string) {
	if m != nil {
		m.framesIn.WithLabelValues(typ).Inc()
	}
}

func (m *Metrics) frameOut(typ string) {
	if m != nil {
		m.framesOut.WithLabelValues(typ).Inc()
	}
}

func (m *Metrics) closed(code int) {
	if m != nil {
		m.closes.WithLabelValues(strconv.Itoa(code)).Inc()
	}
}

func (m *Metrics) refuse(code string) {
	if m != nil {
		m.refused.WithLabelValues(code).Inc()
	}
}

func (m *Metrics) stale(typ string) {
	if m != nil {
		m.stales.WithLabelValues(typ).Inc()
	}
}

func (m *Metrics) frameRefused(typ string, code dispatch.ECode) {
	if m != nil {
		m.frameRefs.WithLabelValues(typ, string(code)).Inc()
	}
}
