package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// The alert rules in docs/alerts.yaml are a well-formed Prometheus rule file, each
// rule with a name, an expression, a severity, a summary and a runbook section that
// exists in docs/failover.md, and every understudy_ metric an expression names is one
// a region of a deployment really exports.
func TestAlertRulesUseRealMetrics(t *testing.T) {
	b, err := os.ReadFile("../../docs/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil {
		t.Fatalf("docs/alerts.yaml: %v", err)
	}
	runbook, err := os.ReadFile("../../docs/failover.md")
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, line := range strings.Split(string(runbook), "\n") {
		if h, ok := strings.CutPrefix(line, "### "); ok {
			anchors[strings.Trim(regexp.MustCompile(`[^a-z0-9]+`).ReplaceAllString(strings.ToLower(h), "-"), "-")] = true
		}
	}

	d := mustRegions(t) // a region of a deployment: leases and all
	_, metrics := get(t, "http://"+d.north.Addr()+"/metrics")
	exported := map[string]bool{}
	for _, line := range strings.Split(metrics, "\n") {
		if name, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, kind, _ := strings.Cut(name, " ")
			exported[name] = true
			if kind == "histogram" {
				for _, s := range []string{"_bucket", "_count", "_sum"} {
					exported[name+s] = true
				}
			}
		}
	}
	metric := regexp.MustCompile(`understudy_[a-z_]+`)
	rules := 0
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			rules++
			if r.Alert == "" || r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("rule %+v: want alert, expr, labels.severity and annotations.summary", r)
			}
			if strings.Count(r.Expr, "(") != strings.Count(r.Expr, ")") {
				t.Errorf("%s: unbalanced parentheses in %q", r.Alert, r.Expr)
			}
			for _, m := range metric.FindAllString(r.Expr, -1) {
				if !exported[m] {
					t.Errorf("%s: expression %q names %s, which a region does not export", r.Alert, r.Expr, m)
				}
			}
			if _, anchor, ok := strings.Cut(r.Annotations["runbook"], "docs/failover.md#"); !ok || !anchors[anchor] {
				t.Errorf("%s: runbook %q is not a section of docs/failover.md", r.Alert, r.Annotations["runbook"])
			}
		}
	}
	if rules < 6 {
		t.Errorf("docs/alerts.yaml has %d rules", rules)
	}
}
