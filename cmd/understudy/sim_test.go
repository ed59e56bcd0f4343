package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/understudy/understudy/loadtest/sim"
)

// runSim runs `understudy sim --json` with args against s, tokens signed with the
// secret in dir, and returns its summary and error.
func runSim(t *testing.T, s *server, dir string, args ...string) (sim.Summary, error, string) {
	t.Helper()
	var out, log bytes.Buffer
	args = append([]string{"sim", "--url", "http://" + s.Addr(), "--data-dir", dir, "--json", "--seed", "1", "--progress", "5s"}, args...)
	err := run(context.Background(), args, &out, &log)
	var sum sim.Summary
	if jerr := json.Unmarshal(out.Bytes(), &sum); jerr != nil {
		t.Fatalf("sim: %v; summary %q: %v\n%s", err, out.String(), jerr, log.String())
	}
	return sum, err, log.String()
}

// TestSimMixedShortRun is the short load run of make test: a small fleet and a few
// rides a second for tens of seconds against a real region, with the simulator's
// correctness checks (every ride final, no double assignment, the ledger) and the
// thresholds of loadtest/scenarios.json. It asserts no throughput.
func TestSimMixedShortRun(t *testing.T) {
	dir := t.TempDir()
	s := mustServe(t, "--data-dir", dir)
	sum, err, log := runSim(t, s, dir, "--scenario", "mixed", "--drivers", "150", "--rate", "4",
		"--duration", "20s", "--ramp", "3s", "--drain", "90s")
	t.Logf("progress:\n%s", log)
	if err != nil || !sum.Passed {
		t.Fatalf("sim: %v; thresholds %+v; problems %v; errors %v", err, sum.Thresholds, sum.Problems, sum.Errors)
	}
	m := sum.Metrics
	if m["rides_requested"].Count == 0 || m["rides_completed"].Count == 0 || m["request_to_offer"].Count == 0 ||
		m["location_updates"].Count == 0 {
		t.Fatalf("nothing happened: %+v", m)
	}
	if got := m["rides_completed"].Count + m["rides_cancelled"].Count + m["rides_no_driver"].Count; got != m["rides_requested"].Count {
		t.Fatalf("%d rides requested, %d ended", m["rides_requested"].Count, got)
	}
	if len(sum.Checks) != 3 || len(sum.Problems) != 0 { // rides final, drivers' stale views, the ledger
		t.Fatalf("checks %v, problems %v", sum.Checks, sum.Problems)
	}
}

// TestSimFailsOnAThreshold: riders and no drivers, so every ride ends no_driver and
// match_rate fails its threshold: the command returns an error (a non-zero exit).
func TestSimFailsOnAThreshold(t *testing.T) {
	dir := t.TempDir()
	s := mustServe(t, "--data-dir", dir, "--max-search", "2s")
	sum, err, _ := runSim(t, s, dir, "--scenario", "riders", "--drivers", "0", "--rate", "2",
		"--duration", "3s", "--ramp", "0s", "--drain", "30s")
	if !errors.Is(err, sim.ErrThresholds) || sum.Passed {
		t.Fatalf("sim: %v, passed %v; want the thresholds to fail", err, sum.Passed)
	}
	failed := map[string]bool{}
	for _, r := range sum.Thresholds {
		if !r.OK {
			failed[r.Metric] = true
		}
	}
	if !failed["match_rate"] || failed["lost_rides"] || failed["ledger_mismatches"] || failed["double_assignments"] {
		t.Fatalf("failed thresholds %v, want match_rate alone among the checks", failed)
	}
}
