package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/understudy/understudy/dispatch"
)

// composeFile is what TestComposeMatchesTheBinary reads of compose.yaml.
type composeFile struct {
	Services map[string]struct {
		Image     string   `yaml:"image"`
		Hostname  string   `yaml:"hostname"`
		Command   []string `yaml:"command"`
		Ports     []string `yaml:"ports"`
		DependsOn []string `yaml:"depends_on"`
		Volumes   []string `yaml:"volumes"`
		Build     *struct {
			Context    string `yaml:"context"`
			Dockerfile string `yaml:"dockerfile"`
		} `yaml:"build"`
	} `yaml:"services"`
}

// compose.yaml cannot be run here (no Docker engine), so it is held to the binary:
// every understudy service's command is parsed by serve's own flag set with the
// deployment file it mounts; each region's service name, hostname, --addr port and
// published port agree with that file; its Redis is a service it depends on; each
// demo driver dials a region in that region's own area; the Dockerfile exists. And
// the same deployment file, its hosts made loopback, runs as processes (dev-cluster)
// with each region serving its home area.
func TestComposeMatchesTheBinary(t *testing.T) {
	b, err := os.ReadFile("../../compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	regionsRun := map[string]bool{}
	var deploymentFile string
	for name, svc := range c.Services {
		if svc.Image != "understudy:dev" {
			continue
		}
		if svc.Build == nil || svc.Build.Context != "." {
			t.Errorf("service %s: want build from the repository root", name)
		} else if _, err := os.Stat(filepath.Join("../..", svc.Build.Dockerfile)); err != nil {
			t.Errorf("service %s: Dockerfile %s: %v", name, svc.Build.Dockerfile, err)
		}
		mounts := map[string]string{} // container path -> repository path
		for _, v := range svc.Volumes {
			parts := strings.Split(v, ":")
			if len(parts) >= 2 {
				mounts[parts[1]] = filepath.Join("../..", parts[0])
			}
		}
		if len(svc.Command) == 0 {
			t.Errorf("service %s has no command", name)
			continue
		}
		args := slices.Clone(svc.Command[1:])
		switch svc.Command[0] {
		case "serve":
			for i, a := range args {
				if host, ok := mounts[a]; ok {
					args[i] = host
					deploymentFile = host
				}
			}
			cfg, err := loadConfig(args, func(k string) string {
				if k == "UNDERSTUDY_SECRET" {
					return "a-secret-of-sixteen-or-more"
				}
				return ""
			}, io.Discard)
			if err != nil {
				t.Errorf("service %s: serve %v: %v", name, args, err)
				continue
			}
			if cfg.Deployment == nil {
				t.Errorf("service %s runs without a deployment file", name)
				continue
			}
			r, ok := cfg.Deployment.Region(cfg.Region)
			if !ok || cfg.Region != name || svc.Hostname != name {
				t.Errorf("service %s (hostname %q) runs region %q", name, svc.Hostname, cfg.Region)
				continue
			}
			regionsRun[name] = true
			u, _ := url.Parse(r.URL)
			_, port, _ := net.SplitHostPort(cfg.Addr)
			if u.Hostname() != name || u.Port() != port {
				t.Errorf("service %s listens on %s, its region's URL is %s", name, cfg.Addr, r.URL)
			}
			if !slices.Contains(svc.Ports, port+":"+port) {
				t.Errorf("service %s publishes %v, want %s:%s", name, svc.Ports, port, port)
			}
			for _, a := range []string{r.NATS, "nats://" + r.NATSCluster} {
				if nu, err := url.Parse(a); err != nil || nu.Hostname() != name {
					t.Errorf("service %s: its NATS address %s is not on its own host", name, a)
				}
			}
			ru, err := url.Parse(cfg.RedisURL)
			if err != nil || ru.Hostname() == "" || !slices.Contains(svc.DependsOn, ru.Hostname()) {
				t.Errorf("service %s: --redis %q is not a service it depends on (%v)", name, cfg.RedisURL, svc.DependsOn)
			} else if _, ok := c.Services[ru.Hostname()]; !ok {
				t.Errorf("service %s: no service %s for its Redis", name, ru.Hostname())
			}
		case "drive":
			vals := map[string]string{}
			for i := 0; i+1 < len(args); i++ {
				if strings.HasPrefix(args[i], "--") && !strings.HasPrefix(args[i+1], "--") {
					vals[args[i][2:]] = args[i+1]
				}
			}
			if !slices.Contains(svc.DependsOn, strings.Split(vals["addr"], ":")[0]) {
				t.Errorf("driver %s dials %s, not a service it depends on", name, vals["addr"])
			}
			lat, _ := strconv.ParseFloat(vals["lat"], 64)
			lng, _ := strconv.ParseFloat(vals["lng"], 64)
			defer func() { // once the deployment file is known
				d, err := dispatch.LoadDeployment(deploymentFile)
				if err != nil {
					return
				}
				a, ok := d.AreaOf(dispatch.Point{Lat: lat, Lng: lng})
				r, _ := d.Region(a.Region)
				if !ok || !strings.Contains(r.URL, "//"+vals["addr"]) {
					t.Errorf("driver %s at %v,%v dials %s, not the home of the area it is in (%q)", name, lat, lng, vals["addr"], a.Name)
				}
			}()
		default:
			t.Errorf("service %s runs understudy %s", name, svc.Command[0])
		}
	}
	d, err := dispatch.LoadDeployment(deploymentFile)
	if err != nil {
		t.Fatalf("the deployment file compose mounts: %v", err)
	}
	for _, r := range d.Regions {
		if !regionsRun[r.Name] {
			t.Errorf("compose.yaml runs no service for region %s", r.Name)
		}
	}

	// The same topology as processes: the file with its hosts on loopback.
	raw, _ := os.ReadFile(deploymentFile)
	taken := map[int]bool{}
	text := regexp.MustCompile(`(north|east|south):(\d+)`).ReplaceAllStringFunc(string(raw), func(string) string {
		return fmt.Sprintf("127.0.0.1:%d", lowPort(t, taken))
	})
	local := filepath.Join(t.TempDir(), "deployment.json")
	if err := os.WriteFile(local, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("UNDERSTUDY_SECRET", procSecret)
	p := startDevCluster(t, "--deployment", local, "--dir", t.TempDir())
	w := &procRegions{tb: t, p: p, regions: p.regionsNow()}
	w.hc = openAPIClient(t)
	for _, a := range d.Areas {
		w.awaitServing(a.Region, a.Name, a.Region)
	}
	var v dispatch.RegionsView
	resp, err := w.hc.Get(w.regions["north"].url + "/v1/regions")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || len(v.Regions) != len(d.Regions) || len(v.Areas) != len(d.Areas) {
		t.Errorf("the dev cluster of compose's deployment: %+v %v", v, err)
	}
}
