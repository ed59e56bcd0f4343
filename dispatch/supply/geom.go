package supply

import (
	"math"

	h3 "github.com/uber/h3-go/v4"
)

// geom is what the index needs to know about the shape of one cell.
type geom struct {
	center Point
	// radiusM is at least the distance from center to any point of the cell.
	radiusM float64
	// scaleM is the shortest distance from center to a vertex: the local size of
	// the grid, from which the ring bound (ringBoundM) is scaled.
	scaleM float64
	// normals are the unit normals of the great circles through the cell's edges,
	// each pointing to the side the centre is on, and margin is how far inside all
	// of them (in dot product) a point must be for contains to vouch for it.
	normals [h3.MaxCellBndryVerts]vec
	n       int
	margin  float64
	// disk is the cells within firstRings of this one, where a query from
	// inside it looks first.
	disk []h3.Cell
}

// vec is a point on the unit sphere.
type vec [3]float64

// ringBoundM is a lower bound on the distance from the query point to any
// point of a cell k or more grid steps from the query's cell, given the cell's
// scaleM and the distance centerM from the point to the cell's centre.
//
// In a plane tiled by regular hexagons of circumradius e, a cell k >= 2 steps away
// is at least (1.5k-2)e from any point of the centre cell and (1.5k-1)e from its
// centre; a neighbour (k = 1) is at least √3/2·e from the centre, its inradius.
// (These are exact minima, computed over the tiling.) A cell further than k steps is
// further still: a great circle from the point to it crosses a cell exactly k steps
// away, as crossing a cell boundary changes the grid distance by at most one.
// H3 cells are not regular on the sphere, so e is the cell's shortest
// centre-to-vertex distance and the result is scaled by safety.
func ringBoundM(k int, scaleM, centerM float64) float64 {
	if k <= 0 {
		return 0
	}
	e := scaleM * safety
	fromCentre := 1.5*float64(k) - 1
	if k == 1 {
		fromCentre = math.Sqrt(3) / 2
	}
	return max(0, (1.5*float64(k)-2)*e, fromCentre*e-centerM)
}

// ringsFor is the smallest disk radius k for which ringBoundM(k+1)
// exceeds limitM, or tooManyRings if that is more.
func ringsFor(limitM, scaleM, centerM float64) int {
	e := scaleM * safety
	// From (1.5(k+1)-2)e > limit: k > (limit/e+2)/1.5 - 1.
	f := (limitM/e+2)/1.5 - 1
	if !(f < tooManyRings) {
		return tooManyRings
	}
	k := max(0, int(f)-1)
	for ringBoundM(k+1, scaleM, centerM) <= limitM {
		k++
	}
	return k
}

// diskSize is the number of cells within k grid steps of a hexagon.
func diskSize(k int) int { return 3*k*(k+1) + 1 }

// geomOf computes the shape of cell.
func geomOf(cell h3.Cell) geom {
	ll := h3.CellToLatLng(cell)
	g := geom{center: Point{Lat: ll.Lat, Lng: ll.Lng}, scaleM: math.Inf(1)}
	c := unit(g.center)
	verts := h3.CellToBoundary(cell)
	minDot := math.Inf(1)
	for i, v := range verts {
		vp := Point{Lat: v.Lat, Lng: v.Lng}
		d := DistanceM(g.center, vp)
		g.radiusM = max(g.radiusM, d)
		g.scaleM = min(g.scaleM, d)
		w := verts[(i+1)%len(verts)]
		n := unit(vp).cross(unit(Point{Lat: w.Lat, Lng: w.Lng}))
		if l := math.Sqrt(n.dot(n)); l > 1e-15 {
			n = vec{n[0] / l, n[1] / l, n[2] / l}
		} else {
			g.n = 0 // a degenerate edge: leave every point to H3
			break
		}
		if n.dot(c) < 0 {
			n = vec{-n[0], -n[1], -n[2]}
		}
		g.normals[g.n] = n
		g.n++
		minDot = min(minDot, n.dot(c))
	}
	g.disk = h3.GridDisk(cell, firstRings)
	// Points closer to an edge than 1e-4 of the inradius are left to H3.
	g.margin = 1e-4 * minDot
	// Driver positions are inside the cell up to rounding; allow for it.
	g.radiusM *= 1 + 1e-6
	return g
}

// contains reports whether u is inside the cell and not on the edge: inside every
// edge's great circle by the margin. For a cell that is star-shaped about its
// centre, as H3 cells are, that implies inside the cell. It never errs on the
// inside; points it refuses are settled by H3.
func (g *geom) contains(u vec) bool {
	if g.n == 0 {
		return false
	}
	for i := range g.n {
		if !(u.dot(g.normals[i]) > g.margin) {
			return false
		}
	}
	return true
}

// unit is p on the unit sphere.
func unit(p Point) vec {
	const rad = math.Pi / 180
	sinLat, cosLat := math.Sincos(p.Lat * rad)
	sinLng, cosLng := math.Sincos(p.Lng * rad)
	return vec{cosLat * cosLng, cosLat * sinLng, sinLat}
}

func (a vec) dot(b vec) float64 { return a[0]*b[0] + a[1]*b[1] + a[2]*b[2] }

func (a vec) cross(b vec) vec {
	return vec{a[1]*b[2] - a[2]*b[1], a[2]*b[0] - a[0]*b[2], a[0]*b[1] - a[1]*b[0]}
}

// valid reports whether p is a real coordinate: finite, latitude in [-90, 90] and
// longitude in [-180, 180] (as dispatch.Point.Validate checks).
func valid(p Point) bool {
	return p.Lat >= -90 && p.Lat <= 90 && p.Lng >= -180 && p.Lng <= 180 // false for NaN
}

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
