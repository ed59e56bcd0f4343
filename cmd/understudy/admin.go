package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/uber/h3-go/v4"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/httpauth"
	"github.com/understudy/understudy/dispatch/httproute"
	"github.com/understudy/understudy/dispatch/problem"
)

// The operator's routes the web apps need beyond the contract: the map's cells
// (GET /v1/admin/cells) and sign-in links (POST /v1/admin/links). Both take an
// admin token.
type admin struct {
	region     string
	store      dispatch.Store
	deployment *dispatch.Deployment // nil: one region serving everywhere
	verifier   dispatch.Verifier
	signer     *keyring // mints the links' tokens with the development secret
	maxTTL     time.Duration
}

// newAdmin builds the operator's routes on the region's store, for admins whose
// tokens v verifies; links are signed with s.keys.
func (s *server) newAdmin(v dispatch.Verifier) *admin {
	return &admin{region: s.cfg.Region, store: s.store, deployment: s.cfg.Deployment, verifier: v, signer: s.keys,
		maxTTL: s.cfg.MaxTokenLifetime}
}

// Routes lists what admin serves.
func (a *admin) Routes() []httproute.Route {
	return []httproute.Route{
		{Method: http.MethodGet, Path: "/v1/admin/cells", Handler: http.HandlerFunc(a.cells)},
		{Method: http.MethodPost, Path: "/v1/admin/links", Handler: http.HandlerFunc(a.links)},
	}
}

// The resolutions GET /v1/admin/cells counts at: a res-5 cell is about 250 km², a
// res-10 one about 15,000 m².
const (
	minCellsRes     = 5
	maxCellsRes     = 10
	defaultCellsRes = 8
)

// CellsView answers GET /v1/admin/cells: what this region sees, per H3 cell.
type CellsView struct {
	Region string      `json:"region"`
	Res    int         `json:"res"`
	At     time.Time   `json:"at"`
	Cells  []CellCount `json:"cells"`
	Areas  []AreaCells `json:"areas"`
}

// CellCount is one cell with drivers or searching rides in it.
type CellCount struct {
	Cell             string           `json:"cell"`
	Boundary         []dispatch.Point `json:"boundary"`
	DriversAvailable int              `json:"drivers_available"`
	DriversBusy      int              `json:"drivers_busy"` // offered, en route or on a trip
	RidesSearching   int              `json:"rides_searching"`
}

// AreaCells is an area of the deployment and the outline of each of its cells.
type AreaCells struct {
	Name  string     `json:"name"`
	Home  string     `json:"home"`
	Cells []CellArea `json:"cells"`
}

// CellArea is one listed cell of an area.
type CellArea struct {
	Cell     string           `json:"cell"`
	Boundary []dispatch.Point `json:"boundary"`
}

// cells is GET /v1/admin/cells?res=N: the drivers (not offline) and searching rides of
// this region's store, counted per cell at resolution N, each cell with its outline,
// and the deployment's areas with theirs, so a map needs no H3 library. It reads every
// driver and active ride of the store: an operator's view, polled every few seconds,
// not a rider's.
func (a *admin) cells(w http.ResponseWriter, r *http.Request) {
	if _, err := httpauth.Authenticate(a.verifier, r, dispatch.RoleAdmin); err != nil {
		problem.Write(w, r, err)
		return
	}
	res := defaultCellsRes
	if v := r.URL.Query().Get("res"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < minCellsRes || n > maxCellsRes {
			problem.Write(w, r, dispatch.Errorf(dispatch.ECodeInvalid, "res %q: want an H3 resolution from %d to %d", dispatch.Clip(v, 16), minCellsRes, maxCellsRes))
			return
		}
		res = n
	}
	counts := map[h3.Cell]*CellCount{}
	at := func(p dispatch.Point) *CellCount {
		c := h3.LatLngToCell(h3.NewLatLng(p.Lat, p.Lng), res)
		if counts[c] == nil {
			counts[c] = &CellCount{Cell: c.String(), Boundary: boundary(c)}
		}
		return counts[c]
	}
	ctx := r.Context()
	err := a.store.Drivers(ctx, func(d dispatch.Driver) error {
		switch {
		case d.Location == nil || d.State == dispatch.DriverOffline:
		case d.State == dispatch.DriverAvailable:
			at(*d.Location).DriversAvailable++
		default:
			at(*d.Location).DriversBusy++
		}
		return nil
	})
	if err == nil {
		err = a.store.ActiveRides(ctx, func(rd dispatch.Ride) error {
			if rd.Status == dispatch.RideSearching {
				at(rd.Pickup).RidesSearching++
			}
			return nil
		})
	}
	if err != nil {
		problem.Write(w, r, err)
		return
	}
	v := CellsView{Region: a.region, Res: res, At: time.Now().UTC(), Cells: make([]CellCount, 0, len(counts)), Areas: []AreaCells{}}
	for _, c := range counts {
		v.Cells = append(v.Cells, *c)
	}
	slices.SortFunc(v.Cells, func(x, y CellCount) int { return strings.Compare(x.Cell, y.Cell) })
	if a.deployment != nil {
		for _, ar := range a.deployment.Areas {
			ac := AreaCells{Name: ar.Name, Home: ar.Region, Cells: make([]CellArea, 0, len(ar.Cells))}
			for _, s := range ar.Cells {
				c := h3.Cell(h3.IndexFromString(s))
				ac.Cells = append(ac.Cells, CellArea{Cell: c.String(), Boundary: boundary(c)})
			}
			v.Areas = append(v.Areas, ac)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}

// boundary is c's outline, its vertices in order.
func boundary(c h3.Cell) []dispatch.Point {
	b := c.Boundary()
	out := make([]dispatch.Point, len(b))
	for i, p := range b {
		out[i] = dispatch.Point{Lat: round6(p.Lat), Lng: round6(p.Lng)}
	}
	return out
}

// round6 rounds to 6 decimals (about 0.1 m), plenty for a map.
func round6(x float64) float64 {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(x, 'f', 6, 64), 64)
	return v
}

// linkRequest is the body of POST /v1/admin/links.
type linkRequest struct {
	Role string `json:"role"`
	Sub  string `json:"sub"`
	TTL  string `json:"ttl,omitempty"` // a Go duration; default defaultLinkTTL
}

// Link answers POST /v1/admin/links: a sign-in link for one driver, rider or admin.
type Link struct {
	URL       string    `json:"url"`
	Role      string    `json:"role"`
	Sub       string    `json:"sub"`
	ExpiresAt time.Time `json:"expires_at"`
}

// defaultLinkTTL is how long a link is valid unless asked otherwise: a shift.
const defaultLinkTTL = 12 * time.Hour

// links is POST /v1/admin/links: a link that signs its holder in to the web app of
// its role (/driver/, /ride/, /ops/) at this region, with a token signed by the
// development secret, carried in the URL's fragment (browsers never send it to a
// server). An operator texts it to a driver.
func (a *admin) links(w http.ResponseWriter, r *http.Request) {
	if _, err := httpauth.Authenticate(a.verifier, r, dispatch.RoleAdmin); err != nil {
		problem.Write(w, r, err)
		return
	}
	var body bytes.Buffer
	if _, err := body.ReadFrom(http.MaxBytesReader(w, r.Body, 4<<10)); err != nil {
		problem.Write(w, r, dispatch.Errorf(dispatch.ECodeTooLarge, "a link request's body is at most 4 KiB"))
		return
	}
	var req linkRequest
	dec := json.NewDecoder(&body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || dec.More() {
		problem.Write(w, r, dispatch.Errorf(dispatch.ECodeInvalid, `want {"role": "driver"|"rider"|"admin", "sub": "<id>", "ttl": "12h"}`))
		return
	}
	ttl := defaultLinkTTL
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			problem.Write(w, r, dispatch.Errorf(dispatch.ECodeInvalid, "ttl %q: want a positive duration such as 12h", dispatch.Clip(req.TTL, 32)))
			return
		}
		ttl = d
	}
	ttl = min(ttl, a.maxTTL)
	id := dispatch.Identity{Subject: req.Sub, Role: dispatch.Role(req.Role)}
	if err := id.Validate(); err != nil {
		problem.Write(w, r, dispatch.Errorf(dispatch.ECodeInvalid, "%v", err))
		return
	}
	tok, err := a.signer.Sign(id, ttl)
	if err != nil {
		problem.Write(w, r, err)
		return
	}
	base := "http://" + r.Host
	if a.deployment != nil {
		if own, ok := a.deployment.Region(a.region); ok {
			base = cmp.Or(own.URL, base)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(Link{URL: signInLink(base, req.Role, tok), Role: req.Role, Sub: req.Sub,
		ExpiresAt: time.Now().Add(ttl).UTC().Truncate(time.Second)})
}
