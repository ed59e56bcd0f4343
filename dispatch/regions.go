package dispatch

// Serving answers who serves an area right now: the region, and the fencing epoch it
// serves it under ("" while nobody does, as far as this region knows). It is the one
// place that question is answered: routing, /v1/regions, the engine's write check
// and the matcher all ask it. natslog.Leases answers from the leases this region
// holds (valid on its own clock) and sees in the lease bucket.
type Serving interface {
	ServedBy(area string) (region string, epoch uint64, ok bool)
	// Taking reports whether this region holds the lease of an area it does not
	// serve yet: it is rebuilding the area's rides from the log.
	Taking() bool
}

// Router tells whether this region serves a point or an area. A nil *Router serves
// everywhere (one region, no deployment file).
type Router struct {
	Deployment *Deployment
	Region     string // this region
	Serving    Serving
}

// noLeaseRetryS is the Retry-After of a no_lease answer: about the time a lease
// takes to be renewed or taken over.
const noLeaseRetryS = 1

// Route returns the area p is in and nil when this region serves it; an *Error with
// code wrong_region and a Redirect to the serving region when another does;
// outside_service_area when p is in no area; no_lease when nobody serves p's area
// right now (see RouteArea). A nil Router returns "" and nil.
func (rt *Router) Route(p Point) (area string, err error) {
	if rt == nil {
		return "", nil
	}
	a, ok := rt.Deployment.AreaOf(p)
	if !ok {
		return "", Errorf(ECodeOutsideService, "%v is outside every area of this deployment", p)
	}
	return a.Name, rt.RouteArea(a.Name)
}

// RouteArea returns nil when this region serves area now (it holds its lease, valid
// on its own clock), wrong_region with a Redirect when another region does, and
// no_lease (with Retry-After) when nobody does as far as this region knows. A nil
// Router, or the empty area of a ride from before any deployment, is served here.
func (rt *Router) RouteArea(area string) error {
	if rt == nil || area == "" {
		return nil
	}
	by, _, ok := rt.Serving.ServedBy(area)
	switch {
	case !ok:
		return Errorf(ECodeInvalid, "no area %q in this deployment", area)
	case by == "":
		return &Error{Code: ECodeNoLease, RetryAfterS: noLeaseRetryS,
			Message: "nobody holds the lease of area " + area + " right now: retry shortly"}
	case by == rt.Region:
		return nil
	}
	r, _ := rt.Deployment.Region(by)
	return &Error{Code: ECodeWrongRegion, Message: "area " + area + " is served by region " + by + " at " + r.URL,
		Redirect: &Redirect{Region: by, URL: r.URL}}
}

// taking reports whether this region is taking an area over (see Serving.Taking): a
// ride it lacks may be one it has not adopted yet.
func (rt *Router) taking() bool {
	return rt != nil && rt.Serving.Taking()
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
