package dispatch_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uber/h3-go/v4"

	"github.com/understudy/understudy/dispatch"
)

// contractDeployment is the contract's example deployment file.
const contractDeployment = dispatch.ExampleDeployment

// editDeployment decodes the contract's example into generic JSON, lets edit change
// it and encodes it again.
func editDeployment(t *testing.T, edit func(d map[string]any)) []byte {
	t.Helper()
	var d map[string]any
	if err := json.Unmarshal([]byte(contractDeployment), &d); err != nil {
		t.Fatal(err)
	}
	edit(d)
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func regionEntry(d map[string]any, i int) map[string]any {
	return d["regions"].([]any)[i].(map[string]any)
}
func areaEntry(d map[string]any, i int) map[string]any { return d["areas"].([]any)[i].(map[string]any) }

func TestParseDeploymentContractExample(t *testing.T) {
	d, err := dispatch.ParseDeployment([]byte(contractDeployment))
	if err != nil {
		t.Fatal(err)
	}
	if time.Duration(d.LeaseTTL) != 3*time.Second {
		t.Errorf("lease_ttl = %v", time.Duration(d.LeaseTTL))
	}
	east, ok := d.Region("east")
	if !ok || east.URL != "http://127.0.0.1:9102" || east.Successor != "south" || east.NATS != "nats://127.0.0.1:4302" || east.NATSCluster != "127.0.0.1:6302" {
		t.Errorf("Region(east) = %+v, %v", east, ok)
	}
	if _, ok := d.Region("west"); ok {
		t.Error("Region(west) found")
	}
	var chain []string
	for _, r := range d.Successors("north") {
		chain = append(chain, r.Name)
	}
	if strings.Join(chain, ",") != "east,south" {
		t.Errorf("Successors(north) = %v, want east,south", chain)
	}
	if a, ok := d.Area("mapo"); !ok || a.Region != "east" {
		t.Errorf("Area(mapo) = %+v, %v", a, ok)
	}
}

func TestParseDeploymentDefaultLeaseTTL(t *testing.T) {
	d, err := dispatch.ParseDeployment(editDeployment(t, func(d map[string]any) { delete(d, "lease_ttl") }))
	if err != nil {
		t.Fatal(err)
	}
	if time.Duration(d.LeaseTTL) != dispatch.DefaultLeaseTTL {
		t.Errorf("lease_ttl = %v, want the default %v", time.Duration(d.LeaseTTL), dispatch.DefaultLeaseTTL)
	}
}

func TestDeploymentAreaOf(t *testing.T) {
	// A deployment with cells of two resolutions: gangbuk a res-6 cell, mapo one
	// res-8 grandchild of its res-6 cell.
	mapo6 := h3.Cell(h3.IndexFromString("8630e1d87ffffff"))
	mapo8 := mapo6.Children(8)[3]
	d, err := dispatch.ParseDeployment(editDeployment(t, func(d map[string]any) {
		areaEntry(d, 2)["cells"] = []any{mapo8.String()}
	}))
	if err != nil {
		t.Fatal(err)
	}
	at := func(c h3.Cell) dispatch.Point {
		ll := h3.CellToLatLng(c)
		return dispatch.Point{Lat: ll.Lat, Lng: ll.Lng}
	}
	for _, tc := range []struct {
		name string
		p    dispatch.Point
		want string // "" = in no area
	}{
		{"centre of a res-6 cell", at(h3.Cell(h3.IndexFromString("8630e1c37ffffff"))), "gangbuk"},
		{"res-9 cell inside the res-6 cell", at(h3.Cell(h3.IndexFromString("8630e1c37ffffff")).Children(9)[40]), "gangbuk"},
		{"inside the res-8 cell", at(mapo8.Children(10)[5]), "mapo"},
		{"sibling of the res-8 cell", at(mapo6.Children(8)[4]), ""},
		{"far away", dispatch.Point{Lat: 35.1, Lng: 129.0}, ""},
	} {
		a, ok := d.AreaOf(tc.p)
		if got := map[bool]string{true: a.Name}[ok]; got != tc.want {
			t.Errorf("%s: AreaOf(%v) = %q, want %q", tc.name, tc.p, got, tc.want)
		}
	}
}

func TestParseDeploymentErrors(t *testing.T) {
	gangbuk := h3.Cell(h3.IndexFromString("8630e1c37ffffff"))
	for _, tc := range []struct {
		name string
		body []byte
		want string // in the error
	}{
		{"not JSON", []byte(`{"regions":`), "deployment: unexpected EOF"},
		{"unknown field", editDeployment(t, func(d map[string]any) { d["lease"] = "3s" }), `unknown field "lease"`},
		{"unknown region field", editDeployment(t, func(d map[string]any) { regionEntry(d, 0)["sucessor"] = "east" }), `unknown field "sucessor"`},
		{"trailing data", []byte(contractDeployment + "{}"), "data after the JSON object"},
		{"bad lease_ttl", editDeployment(t, func(d map[string]any) { d["lease_ttl"] = "soon" }), `invalid duration "soon"`},
		{"lease_ttl not whole seconds", editDeployment(t, func(d map[string]any) { d["lease_ttl"] = "1500ms" }), "lease_ttl 1.5s: must be a whole number of seconds"},
		{"lease_ttl below a second", editDeployment(t, func(d map[string]any) { d["lease_ttl"] = "500ms" }), "lease_ttl 500ms"},
		{"fewer than 3 regions", editDeployment(t, func(d map[string]any) {
			d["regions"] = d["regions"].([]any)[:2]
			regionEntry(d, 1)["successor"] = "north"
			d["areas"] = d["areas"].([]any)[:1]
		}), "2 regions: a deployment has at least 3"},
		{"region without name", editDeployment(t, func(d map[string]any) { regionEntry(d, 1)["name"] = "" }), `regions[1]: no name`},
		{"bad region name", editDeployment(t, func(d map[string]any) { regionEntry(d, 1)["name"] = "ea st" }), `regions[1] "ea st": a name is letters`},
		{"duplicate region", editDeployment(t, func(d map[string]any) {
			regionEntry(d, 2)["name"] = "east"
			regionEntry(d, 2)["url"] = "http://127.0.0.1:9104"
		}), `regions[2] "east": duplicate region name`},
		{"region without url", editDeployment(t, func(d map[string]any) { delete(regionEntry(d, 1), "url") }), `regions[1] "east": no url`},
		{"region with a relative url", editDeployment(t, func(d map[string]any) { regionEntry(d, 1)["url"] = "127.0.0.1:9102" }), `regions[1] "east": url "127.0.0.1:9102" is not an absolute http(s) URL`},
		{"two regions, one url", editDeployment(t, func(d map[string]any) { regionEntry(d, 1)["url"] = "http://127.0.0.1:9101/" }), `regions[1] "east": url http://127.0.0.1:9101 is also region "north"'s`},
		{"bad nats url", editDeployment(t, func(d map[string]any) { regionEntry(d, 0)["nats"] = "127.0.0.1:4301" }), `regions[0] "north": nats "127.0.0.1:4301" is not a nats://host:port URL`},
		{"shared nats url", editDeployment(t, func(d map[string]any) { regionEntry(d, 2)["nats"] = "nats://127.0.0.1:4301" }), `regions[2] "south": nats nats://127.0.0.1:4301 is also region "north"'s`},
		{"bad nats_cluster", editDeployment(t, func(d map[string]any) { regionEntry(d, 0)["nats_cluster"] = "6301" }), `regions[0] "north": nats_cluster "6301" is not host:port`},
		{"shared nats_cluster", editDeployment(t, func(d map[string]any) { regionEntry(d, 1)["nats_cluster"] = "127.0.0.1:6301" }), `regions[1] "east": nats_cluster 127.0.0.1:6301 is also region "north"'s`},
		{"no successor", editDeployment(t, func(d map[string]any) { delete(regionEntry(d, 1), "successor") }), `regions[1] "east": no successor`},
		{"own successor", editDeployment(t, func(d map[string]any) { regionEntry(d, 1)["successor"] = "east" }), `regions[1] "east": successor is the region itself`},
		{"unknown successor", editDeployment(t, func(d map[string]any) { regionEntry(d, 1)["successor"] = "west" }), `regions[1] "east": successor "west" is not a region of this deployment`},
		{"no areas", editDeployment(t, func(d map[string]any) { d["areas"] = []any{} }), "deployment: no areas"},
		{"area without name", editDeployment(t, func(d map[string]any) { areaEntry(d, 1)["name"] = "" }), "areas[1]: no name"},
		{"duplicate area", editDeployment(t, func(d map[string]any) { areaEntry(d, 2)["name"] = "gangbuk" }), `areas[2] "gangbuk": duplicate area name`},
		{"area without home", editDeployment(t, func(d map[string]any) { delete(areaEntry(d, 0), "region") }), `areas[0] "gangbuk": no home region`},
		{"area with unknown home", editDeployment(t, func(d map[string]any) { areaEntry(d, 0)["region"] = "west" }), `areas[0] "gangbuk": home region "west" is not a region of this deployment`},
		{"area without cells", editDeployment(t, func(d map[string]any) { areaEntry(d, 0)["cells"] = []any{} }), `areas[0] "gangbuk": no cells`},
		{"not hex", editDeployment(t, func(d map[string]any) { areaEntry(d, 0)["cells"] = []any{"gangbuk"} }), `areas[0] "gangbuk": cell "gangbuk" is not a valid H3 cell index`},
		{"not a cell", editDeployment(t, func(d map[string]any) { areaEntry(d, 0)["cells"] = []any{"8630e1c37fffff0"} }), `cell "8630e1c37fffff0" is not a valid H3 cell index`},
		{"cell with trailing junk", editDeployment(t, func(d map[string]any) { areaEntry(d, 0)["cells"] = []any{"8630e1c37ffffffz"} }), `cell "8630e1c37ffffffz" is not a valid H3 cell index`},
		{"same cell in two areas", editDeployment(t, func(d map[string]any) { areaEntry(d, 1)["cells"] = []any{"8630e1c37ffffff"} }), `areas[1] "gangnam": cell 8630e1c37ffffff is listed twice (also in area "gangbuk")`},
		{"overlapping areas", editDeployment(t, func(d map[string]any) { areaEntry(d, 1)["cells"] = []any{gangbuk.Children(8)[7].String()} }),
			`areas[1] "gangnam": cell ` + gangbuk.Children(8)[7].String() + ` lies inside cell 8630e1c37ffffff of area "gangbuk": areas do not overlap`},
		{"overlap within an area", editDeployment(t, func(d map[string]any) {
			areaEntry(d, 0)["cells"] = []any{"8630e1c37ffffff", gangbuk.Children(7)[0].String()}
		}), `areas[0] "gangbuk": cell ` + gangbuk.Children(7)[0].String() + ` lies inside cell 8630e1c37ffffff of area "gangbuk"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := dispatch.ParseDeployment(tc.body)
			if err == nil {
				t.Fatalf("ParseDeployment accepted it: %+v", d)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

func TestParseDeploymentReportsEveryError(t *testing.T) {
	_, err := dispatch.ParseDeployment(editDeployment(t, func(d map[string]any) {
		regionEntry(d, 0)["successor"] = "west"
		delete(regionEntry(d, 2), "url")
	}))
	if err == nil || !strings.Contains(err.Error(), `successor "west"`) || !strings.Contains(err.Error(), `"south": no url`) {
		t.Fatalf("error %v does not name both entries", err)
	}
}

func TestLoadDeployment(t *testing.T) {
	path := filepath.Join(t.TempDir(), "deployment.json")
	if _, err := dispatch.LoadDeployment(path); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing file: %v", err)
	}
	if err := os.WriteFile(path, []byte(`{"regions":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := dispatch.LoadDeployment(path); err == nil || !strings.HasPrefix(err.Error(), path+": ") {
		t.Fatalf("bad file: error %v does not name the file", err)
	}
	if err := os.WriteFile(path, []byte(contractDeployment), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := dispatch.LoadDeployment(path); err != nil {
		t.Fatal(err)
	}
}
