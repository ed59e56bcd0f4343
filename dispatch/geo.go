package dispatch

import (
	"fmt"
	"math"
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

// earthRadiusM is the mean earth radius that H3 also uses.
const earthRadiusM = 6371007.180918475

// DistanceM is the great-circle (haversine) distance between a and b in metres.
func DistanceM(a, b Point) float64 {
	const rad = math.Pi / 180
	lat1, lat2 := a.Lat*rad, b.Lat*rad
	dLat := lat2 - lat1
	dLng := (b.Lng - a.Lng) * rad
	s1 := math.Sin(dLat / 2)
	s2 := math.Sin(dLng / 2)
	h := s1*s1 + math.Cos(lat1)*math.Cos(lat2)*s2*s2
	return 2 * earthRadiusM * math.Asin(math.Min(1, math.Sqrt(h)))
}
