package dispatch

import (
	"fmt"
	"math"

	"github.com/understudy/understudy/dispatch/supply"
)

// Point is a position on the earth in degrees (WGS 84).
type Point struct {
	Lat float64 `json:"lat"`
	Lng float64 `json:"lng"`
}

// Validate reports whether p is a real coordinate: finite, latitude in [-90, 90] and
// longitude in [-180, 180].
func (p Point) Validate() error {
	switch {
	case math.IsNaN(p.Lat) || math.IsInf(p.Lat, 0) || p.Lat < -90 || p.Lat > 90:
		return Errorf(ECodeInvalid, "latitude %v is out of range [-90, 90]", p.Lat)
	case math.IsNaN(p.Lng) || math.IsInf(p.Lng, 0) || p.Lng < -180 || p.Lng > 180:
		return Errorf(ECodeInvalid, "longitude %v is out of range [-180, 180]", p.Lng)
	}
	return nil
}

func (p Point) String() string { return fmt.Sprintf("(%.6f,%.6f)", p.Lat, p.Lng) }

// DistanceM is the great-circle (haversine) distance between a and b in metres.
func DistanceM(a, b Point) float64 { return supply.DistanceM(supply.Point(a), supply.Point(b)) }
