package dispatch

// Serving answers who serves an area right now: the region, and the fencing epoch it
// serves it under (0 when this region does not know it). It is the one place that
// question is answered: routing, /v1/regions and (later) the lease check all ask it.
// HomeServing answers from the deployment file; a lease table will answer from the
// leases it holds and sees.
type Serving interface {
	ServedBy(area string) (region string, epoch uint64, ok bool)
}

// HomeServing is Serving before leases: every area is served by its home region.
// This region (Region) serves its own areas under Epoch; the others' epochs are not
// known here (0).
type HomeServing struct {
	Deployment *Deployment
	Region     string        // this region
	Epoch      func() uint64 // this region's fencing epoch; nil reports 0
}

// ServedBy returns area's home region.
func (h HomeServing) ServedBy(area string) (string, uint64, bool) {
	a, ok := h.Deployment.Area(area)
	if !ok {
		return "", 0, false
	}
	var epoch uint64
	if a.Region == h.Region && h.Epoch != nil {
		epoch = h.Epoch()
	}
	return a.Region, epoch, true
}

// Router tells whether this region serves a point. A nil *Router serves everywhere
// (one region, no deployment file).
type Router struct {
	Deployment *Deployment
	Region     string // this region
	Serving    Serving
}

// Route returns nil when this region serves p; an *Error with code wrong_region and a
// Redirect to the serving region when another does; outside_service_area when p is
// in no area; unavailable when nobody serves p's area right now.
func (rt *Router) Route(p Point) error {
	if rt == nil {
		return nil
	}
	a, ok := rt.Deployment.AreaOf(p)
	if !ok {
		return Errorf(ECodeOutsideService, "%v is outside every area of this deployment", p)
	}
	by, _, ok := rt.Serving.ServedBy(a.Name)
	switch {
	case !ok || by == "":
		return Errorf(ECodeUnavailable, "nobody serves area %s right now", a.Name)
	case by == rt.Region:
		return nil
	}
	r, _ := rt.Deployment.Region(by)
	return &Error{Code: ECodeWrongRegion, Message: "area " + a.Name + " is served by region " + by + " at " + r.URL,
		Redirect: &Redirect{Region: by, URL: r.URL}}
}

// RegionsView is the answer of GET /v1/regions.
type RegionsView struct {
	Regions []RegionView `json:"regions"`
	Areas   []AreaView   `json:"areas"`
}

// RegionView is one region in RegionsView. Up is true, false, or nil when unknown.
type RegionView struct {
	Name string `json:"name"`
	URL  string `json:"url"`
	Up   *bool  `json:"up"`
}

// AreaView is one area in RegionsView: its home, the region serving it now (nil while
// nobody does) and that region's fencing epoch for it (nil when not known here).
type AreaView struct {
	Name     string  `json:"name"`
	Home     string  `json:"home"`
	ServedBy *string `json:"served_by"`
	Epoch    *uint64 `json:"epoch"`
}

// View is the deployment's regions and who serves each area now; up reports whether
// a region is up (nil: unknown).
func (rt *Router) View(up func(region string) *bool) RegionsView {
	v := RegionsView{Regions: make([]RegionView, 0, len(rt.Deployment.Regions)), Areas: make([]AreaView, 0, len(rt.Deployment.Areas))}
	for _, r := range rt.Deployment.Regions {
		v.Regions = append(v.Regions, RegionView{Name: r.Name, URL: r.URL, Up: up(r.Name)})
	}
	for _, a := range rt.Deployment.Areas {
		av := AreaView{Name: a.Name, Home: a.Region}
		if by, epoch, ok := rt.Serving.ServedBy(a.Name); ok && by != "" {
			av.ServedBy = &by
			if epoch != 0 {
				av.Epoch = &epoch
			}
		}
		v.Areas = append(v.Areas, av)
	}
	return v
}
