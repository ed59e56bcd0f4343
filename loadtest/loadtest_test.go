package loadtest_test

import (
	"math"
	"testing"

	"github.com/understudy/understudy/loadtest"
)

func TestScenariosFileLoads(t *testing.T) {
	f, err := loadtest.Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"drivers", "riders", "mixed", "failover"} {
		if _, ok := f.Scenarios[name]; !ok {
			t.Errorf("scenario %s missing", name)
		}
	}
	for _, name := range []string{"request_to_offer", "request_to_matched", "match_rate", "errors", "lost_rides"} {
		if _, ok := f.Metric(name); !ok {
			t.Errorf("metric %s missing", name)
		}
		if len(f.Thresholds[name]) == 0 {
			t.Errorf("metric %s has no threshold", name)
		}
	}
}

func TestParseThreshold(t *testing.T) {
	for _, c := range []struct {
		kind, expr string
		got        float64
		holds      bool
		bad        bool
	}{
		{loadtest.Trend, "p(99)<3000", 2999, true, false},
		{loadtest.Trend, "p(99.9) < 3000", 3000, false, false},
		{loadtest.Trend, "med<=10", 10, true, false},
		{loadtest.Rate, "rate>0.9", 0.9, false, false},
		{loadtest.Counter, "count<1", 0, true, false},
		{loadtest.Counter, "count==0", 1, false, false},
		{loadtest.Rate, "p(99)<1", 0, false, true},
		{loadtest.Trend, "p(101)<1", 0, false, true},
		{loadtest.Trend, "p99<1", 0, false, true},
		{loadtest.Counter, "count<", 0, false, true},
	} {
		th, err := loadtest.ParseThreshold(c.kind, c.expr)
		if (err != nil) != c.bad {
			t.Errorf("%s %q: err %v, want bad %v", c.kind, c.expr, err, c.bad)
			continue
		}
		if err == nil && th.Holds(c.got) != c.holds {
			t.Errorf("%q holds(%v) = %v", c.expr, c.got, !c.holds)
		}
	}
}

func TestPercentile(t *testing.T) {
	v := []float64{1, 2, 3, 4, 5}
	for p, want := range map[float64]float64{0: 1, 50: 3, 100: 5, 25: 2, 90: 4.6} {
		if got := loadtest.Percentile(v, p); math.Abs(got-want) > 1e-9 {
			t.Errorf("p(%v) = %v, want %v", p, got, want)
		}
	}
	if !math.IsNaN(loadtest.Percentile(nil, 50)) {
		t.Error("p(50) of nothing is not NaN")
	}
}
