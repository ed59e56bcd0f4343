package dispatch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/uber/h3-go/v4"
)

// MinRegions is the fewest regions a deployment file may list. The ride log, the
// ledger and the lease bucket keep 3 replicas placed in distinct regions, so that an
// acknowledged write survives the loss of a whole region; with fewer regions there is
// no such placement, and a deployment of one region is simply serve without
// --deployment.
const MinRegions = 3

// DefaultLeaseTTL is the lease of an area when the deployment file gives none.
const DefaultLeaseTTL = 3 * time.Second

// Deployment is the deployment file every process of every region reads (the
// contract's "Deployment (several regions)"): the regions, the areas they serve, and
// the lease time. Build one with ParseDeployment or LoadDeployment, which validate it;
// its lookups assume a validated value.
type Deployment struct {
	Regions  []Region     `json:"regions"`
	Areas    []Area       `json:"areas"`
	LeaseTTL JSONDuration `json:"lease_ttl"`

	regions map[string]int  // region name → index in Regions
	areas   map[string]int  // area name → index in Areas
	cells   map[h3.Cell]int // listed cell → index in Areas
	res     []int           // resolutions of the listed cells, ascending
}

// Region is one region of a deployment: its public URL, the region that takes over
// its areas when it is lost, and the addresses of its NATS node.
type Region struct {
	Name      string `json:"name"`
	URL       string `json:"url"`       // public base URL of the region's API, e.g. http://127.0.0.1:9101
	Successor string `json:"successor"` // region that takes this one's areas when it is lost
	// NATS is the client URL of the region's NATS node; NATSCluster its cluster-route
	// address (host:port). Both may be omitted when every region uses --nats with an
	// external cluster; serve's embedded clustering needs them.
	NATS        string `json:"nats,omitempty"`
	NATSCluster string `json:"nats_cluster,omitempty"`
}

// Area is a part of the map served by one region at a time; Region is its home.
// Cells are H3 cell indexes of any resolution; a point is in the area when its cell
// at the resolution of a listed cell is listed.
type Area struct {
	Name   string   `json:"name"`
	Region string   `json:"region"`
	Cells  []string `json:"cells"`
}

// JSONDuration is a time.Duration written in JSON as a Go duration string ("3s").
type JSONDuration time.Duration

// UnmarshalJSON reads a duration string such as "3s".
func (d *JSONDuration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration is a string such as \"3s\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = JSONDuration(v)
	return nil
}

// MarshalJSON writes the duration as a string such as "3s".
func (d JSONDuration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// LoadDeployment reads and validates the deployment file at path.
func LoadDeployment(path string) (*Deployment, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("deployment: %w", err)
	}
	d, err := ParseDeployment(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

// ParseDeployment decodes a deployment file strictly (unknown fields and trailing
// data are refused) and validates it. The error names every bad entry.
func ParseDeployment(b []byte) (*Deployment, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var d Deployment
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("deployment: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("deployment: data after the JSON object")
	}
	if err := d.validate(); err != nil {
		return nil, err
	}
	return &d, nil
}

// validate checks d and builds its lookups. It reports every problem it finds, each
// naming its entry.
func (d *Deployment) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("deployment: "+format, args...)) }

	if d.LeaseTTL == 0 {
		d.LeaseTTL = JSONDuration(DefaultLeaseTTL)
	}
	if ttl := time.Duration(d.LeaseTTL); ttl < time.Second || ttl%time.Second != 0 {
		bad("lease_ttl %s: must be a whole number of seconds, at least 1s (JetStream TTLs are whole seconds)", ttl)
	}
	if len(d.Regions) < MinRegions {
		bad("%d regions: a deployment has at least %d (each region's log is replicated to 3 distinct regions)", len(d.Regions), MinRegions)
	}

	d.regions = make(map[string]int, len(d.Regions))
	urls, natsURLs, routes := map[string]string{}, map[string]string{}, map[string]string{}
	seen := func(m map[string]string, key, owner, what string, i int) {
		if key == "" {
			return
		}
		if other, dup := m[key]; dup {
			bad("regions[%d] %q: %s %s is also region %q's", i, owner, what, key, other)
			return
		}
		m[key] = owner
	}
	for i, r := range d.Regions {
		switch {
		case r.Name == "":
			bad("regions[%d]: no name", i)
			continue
		case !validName(r.Name):
			bad("regions[%d] %q: a name is letters, digits, '-' and '_'", i, r.Name)
		}
		if _, dup := d.regions[r.Name]; dup {
			bad("regions[%d] %q: duplicate region name", i, r.Name)
			continue
		}
		d.regions[r.Name] = i
		if r.URL == "" {
			bad("regions[%d] %q: no url", i, r.Name)
		} else if u, err := url.Parse(r.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("regions[%d] %q: url %q is not an absolute http(s) URL", i, r.Name, r.URL)
		}
		seen(urls, strings.TrimRight(r.URL, "/"), r.Name, "url", i)
		if r.NATS != "" {
			if u, err := url.Parse(r.NATS); err != nil || u.Scheme != "nats" || u.Host == "" {
				bad("regions[%d] %q: nats %q is not a nats://host:port URL", i, r.Name, r.NATS)
			}
		}
		seen(natsURLs, r.NATS, r.Name, "nats", i)
		if r.NATSCluster != "" {
			if _, _, err := net.SplitHostPort(r.NATSCluster); err != nil {
				bad("regions[%d] %q: nats_cluster %q is not host:port", i, r.Name, r.NATSCluster)
			}
		}
		seen(routes, r.NATSCluster, r.Name, "nats_cluster", i)
	}
	for i, r := range d.Regions {
		if r.Name == "" {
			continue
		}
		switch _, known := d.regions[r.Successor]; {
		case r.Successor == "":
			bad("regions[%d] %q: no successor", i, r.Name)
		case r.Successor == r.Name:
			bad("regions[%d] %q: successor is the region itself", i, r.Name)
		case !known:
			bad("regions[%d] %q: successor %q is not a region of this deployment", i, r.Name, r.Successor)
		}
	}

	if len(d.Areas) == 0 {
		bad("no areas")
	}
	d.areas = make(map[string]int, len(d.Areas))
	d.cells = make(map[h3.Cell]int)
	var res []int
	for i, a := range d.Areas {
		if a.Name == "" {
			bad("areas[%d]: no name", i)
			continue
		}
		if _, dup := d.areas[a.Name]; dup {
			bad("areas[%d] %q: duplicate area name", i, a.Name)
			continue
		}
		d.areas[a.Name] = i
		if a.Region == "" {
			bad("areas[%d] %q: no home region", i, a.Name)
		} else if _, ok := d.regions[a.Region]; !ok {
			bad("areas[%d] %q: home region %q is not a region of this deployment", i, a.Name, a.Region)
		}
		if len(a.Cells) == 0 {
			bad("areas[%d] %q: no cells", i, a.Name)
		}
		for _, s := range a.Cells {
			c := h3.Cell(h3.IndexFromString(s))
			if !c.IsValid() || !strings.EqualFold(c.String(), strings.TrimPrefix(strings.ToLower(s), "0x")) {
				bad("areas[%d] %q: cell %q is not a valid H3 cell index", i, a.Name, s)
				continue
			}
			if j, dup := d.cells[c]; dup {
				bad("areas[%d] %q: cell %s is listed twice (also in area %q)", i, a.Name, s, d.Areas[j].Name)
				continue
			}
			d.cells[c] = i
			if !slices.Contains(res, c.Resolution()) {
				res = append(res, c.Resolution())
			}
		}
	}
	slices.Sort(res)
	d.res = res
	// Overlap: a listed cell inside another listed cell (its parent at a coarser
	// listed resolution is listed too).
	for c, i := range d.cells {
		for _, r := range res {
			if r >= c.Resolution() {
				break
			}
			if j, ok := d.cells[c.Parent(r)]; ok {
				bad("areas[%d] %q: cell %s lies inside cell %s of area %q: areas do not overlap", i, d.Areas[i].Name, c, c.Parent(r), d.Areas[j].Name)
			}
		}
	}
	if len(errs) > 0 {
		slices.SortStableFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
		return errors.Join(errs...)
	}
	return nil
}

func validName(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return s != ""
}

// Region returns the region called name.
func (d *Deployment) Region(name string) (Region, bool) {
	i, ok := d.regions[name]
	if !ok {
		return Region{}, false
	}
	return d.Regions[i], true
}

// Area returns the area called name.
func (d *Deployment) Area(name string) (Area, bool) {
	i, ok := d.areas[name]
	if !ok {
		return Area{}, false
	}
	return d.Areas[i], true
}

// Successors returns the regions that take over name's areas, in order: its
// successor, then that one's, and so on, each once, never name itself. Unknown
// names have none.
func (d *Deployment) Successors(name string) []Region {
	if _, ok := d.regions[name]; !ok {
		return nil
	}
	var chain []Region
	seen := map[string]bool{name: true}
	for r, _ := d.Region(name); ; {
		next, ok := d.Region(r.Successor)
		if !ok || seen[next.Name] {
			return chain
		}
		seen[next.Name] = true
		chain = append(chain, next)
		r = next
	}
}

// AreaOf returns the area p lies in: the area that lists p's cell at the resolution
// of one of the listed cells. Areas do not overlap, so there is at most one.
func (d *Deployment) AreaOf(p Point) (Area, bool) {
	ll := h3.NewLatLng(p.Lat, p.Lng)
	for _, r := range d.res {
		if i, ok := d.cells[h3.LatLngToCell(ll, r)]; ok {
			return d.Areas[i], true
		}
	}
	return Area{}, false
}

// ExampleDeployment is the contract's example deployment file: three regions on
// loopback, each with its own NATS node. `understudy dev-cluster` runs it when given
// no file.
const ExampleDeployment = `{
  "regions": [
    {"name": "north", "url": "http://127.0.0.1:9101", "successor": "east",
     "nats": "nats://127.0.0.1:4301", "nats_cluster": "127.0.0.1:6301"},
    {"name": "east",  "url": "http://127.0.0.1:9102", "successor": "south",
     "nats": "nats://127.0.0.1:4302", "nats_cluster": "127.0.0.1:6302"},
    {"name": "south", "url": "http://127.0.0.1:9103", "successor": "north",
     "nats": "nats://127.0.0.1:4303", "nats_cluster": "127.0.0.1:6303"}
  ],
  "areas": [
    {"name": "gangbuk", "region": "north", "cells": ["8630e1c37ffffff"]},
    {"name": "gangnam", "region": "south", "cells": ["8630e1ca7ffffff"]},
    {"name": "mapo",    "region": "east",  "cells": ["8630e1d87ffffff"]}
  ],
  "lease_ttl": "3s"
}
`
