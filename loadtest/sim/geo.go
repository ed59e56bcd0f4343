package sim

import (
	"math"
	"math/rand/v2"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/loadtest"
)

// offset is p moved north by dy and east by dx metres.
func offset(p dispatch.Point, dx, dy float64) dispatch.Point {
	const mPerDeg = 111_320.0
	return dispatch.Point{
		Lat: p.Lat + dy/mPerDeg,
		Lng: p.Lng + dx/(mPerDeg*math.Cos(p.Lat*math.Pi/180)),
	}
}

// near is a point around hub: normally distributed, σ radius/2, within radius.
func near(r *rand.Rand, hub dispatch.Point, radius float64) dispatch.Point {
	for {
		dx, dy := r.NormFloat64()*radius/2, r.NormFloat64()*radius/2
		if dx*dx+dy*dy <= radius*radius {
			return offset(hub, dx, dy)
		}
	}
}

// toward is the point a share f (0 to 1) of the way from a to b.
func toward(a, b dispatch.Point, f float64) dispatch.Point {
	f = max(0, min(1, f))
	return dispatch.Point{Lat: a.Lat + (b.Lat-a.Lat)*f, Lng: a.Lng + (b.Lng-a.Lng)*f}
}

// heading is the compass bearing from a to b in degrees, [0, 360).
func heading(a, b dispatch.Point) float64 {
	dy := b.Lat - a.Lat
	dx := (b.Lng - a.Lng) * math.Cos(a.Lat*math.Pi/180)
	h := math.Atan2(dx, dy) * 180 / math.Pi
	if h < 0 {
		h += 360
	}
	return math.Mod(h, 360)
}

func hubPoint(h loadtest.Hub) dispatch.Point { return dispatch.Point{Lat: h.Lat, Lng: h.Lng} }

// between is a random duration in seconds in [lo, hi].
func between(r *rand.Rand, b [2]float64) float64 { return b[0] + r.Float64()*(b[1]-b[0]) }
