package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/loadtest"
	"github.com/understudy/understudy/loadtest/sim"
)

// simCmd is `understudy sim`: the fleet simulator of loadtest/sim against a region
// or a deployment, with a scenario of loadtest/scenarios.json. It prints a progress
// line every few seconds and a summary (JSON with --json), and fails when a
// threshold of scenarios.json fails.
func simCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	file, err := loadtest.Load()
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	base := fs.String("url", "http://127.0.0.1:8080", "base `URL` of the region to load (in a deployment, any region: the clients follow /v1/regions)")
	var regions stringList
	fs.Var(&regions, "region-url", "base `URL` of another region of the deployment, tried when --url cannot be reached (repeatable)")
	name := fs.String("scenario", "mixed", "scenario of loadtest/scenarios.json: "+strings.Join(file.ScenarioNames(), ", "))
	city := fs.String("city", "", "override the scenario's city: "+strings.Join(file.CityNames(), ", "))
	drivers := fs.Int("drivers", -1, "override the scenario's number of drivers")
	rate := fs.Float64("rate", -1, "override the scenario's rider arrivals per second")
	duration := fs.Duration("duration", 0, "override the scenario's duration (after the ramp)")
	ramp := fs.Duration("ramp", -1, "override the scenario's ramp: drivers connect evenly over it")
	drain := fs.Duration("drain", -1, "override how long rides in flight may take to end after the arrivals stop")
	interval := fs.Duration("location-interval", 0, "override each driver's location period")
	asJSON := fs.Bool("json", false, "print the summary as JSON on stdout (progress still goes to stderr)")
	every := fs.Duration("progress", 5*time.Second, "progress line period (0: none)")
	seed := fs.Uint64("seed", 0, "random seed (0: from the clock)")
	dataDir := fs.String("data-dir", defaultConfig().DataDir, "the server's `directory`, whose development secret signs the tokens (or set UNDERSTUDY_SECRET)")
	driverTokens := fs.String("driver-tokens", "", "`file` of driver tokens, one JWT a line, instead of minting them (one per driver)")
	riderTokens := fs.String("rider-tokens", "", "`file` of rider tokens, one JWT a line, instead of minting them")
	adminToken := fs.String("admin-token", "", "admin `token` for the ledger check and the scenario's area moves (default: minted)")
	maxLife := maxLifetimeFlag(fs)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: understudy sim [flags]\n\nScenarios (loadtest/scenarios.json):\n")
		for _, n := range file.ScenarioNames() {
			fmt.Fprintf(fs.Output(), "  %-9s %s\n", n, file.Scenarios[n].About)
		}
		fmt.Fprintln(fs.Output())
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("sim: unexpected argument %q", fs.Arg(0))
	}
	sc, ok := file.Scenarios[*name]
	if !ok {
		return fmt.Errorf("sim: unknown scenario %q (have %s)", *name, strings.Join(file.ScenarioNames(), ", "))
	}
	if *city != "" {
		sc.City = *city
	}
	if *drivers >= 0 {
		sc.Drivers = *drivers
	}
	if *rate >= 0 {
		sc.RidersPerS = *rate
	}
	if *duration > 0 {
		sc.DurationS = duration.Seconds()
	}
	if *ramp >= 0 {
		sc.RampS = ramp.Seconds()
	}
	if *drain >= 0 {
		sc.DrainS = drain.Seconds()
	}
	if *interval > 0 {
		sc.LocationIntervalS = interval.Seconds()
	}
	if err := sc.Validate(file); err != nil {
		return fmt.Errorf("sim: scenario %s: %w", *name, err)
	}
	tokens, err := simTokens(*dataDir, *maxLife, *driverTokens, *riderTokens,
		time.Duration((sc.RampS+sc.DurationS+sc.DrainS)*float64(time.Second))+10*time.Minute)
	if err != nil {
		return err
	}
	cfg := sim.Config{File: file, Name: *name, Scenario: sc, URL: *base, Regions: regions, Tokens: tokens,
		Admin: *adminToken, Seed: *seed, ProgressEvery: *every}
	if *every > 0 {
		cfg.Progress = stderr
	}
	s, err := sim.New(cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "understudy sim: scenario %s against %s: %d drivers (%s city, location every %gs), %g rides/s for %gs after a %gs ramp\n",
		*name, *base, sc.Drivers, sc.City, sc.LocationIntervalS, sc.RidersPerS, sc.DurationS, sc.RampS)
	sum, err := s.Run(ctx)
	if err != nil && !errors.Is(err, sim.ErrThresholds) {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(sum); err != nil {
			return err
		}
	} else {
		printSummary(stdout, file, sum)
	}
	return err
}

// simTokens mints tokens with the development secret, or hands out those of the
// files, one line per new subject.
func simTokens(dataDir string, maxLife time.Duration, driverFile, riderFile string, ttl time.Duration) (sim.Tokens, error) {
	files := map[dispatch.Role][]string{}
	for role, path := range map[dispatch.Role]string{dispatch.RoleDriver: driverFile, dispatch.RoleRider: riderFile} {
		if path == "" {
			continue
		}
		lines, err := readLines(path)
		if err != nil {
			return nil, fmt.Errorf("sim: %s tokens: %w", role, err)
		}
		if len(lines) == 0 {
			return nil, fmt.Errorf("sim: %s tokens: %s has no token", role, path)
		}
		files[role] = lines
	}
	var (
		keysOnce sync.Once
		sign     func(dispatch.Identity, time.Duration) (string, error)
		keysErr  error
		mu       sync.Mutex
		next     = map[dispatch.Role]int{}
		given    = map[string]string{}
	)
	ttl = min(ttl, maxLife)
	return func(role dispatch.Role, sub string) (string, error) {
		if lines, ok := files[role]; ok {
			mu.Lock()
			defer mu.Unlock()
			key := string(role) + " " + sub
			if t, ok := given[key]; ok {
				return t, nil
			}
			i := next[role]
			if i >= len(lines) {
				return "", fmt.Errorf("only %d %s tokens given, and more %ss are needed", len(lines), role, role)
			}
			next[role]++
			given[key] = lines[i]
			return lines[i], nil
		}
		keysOnce.Do(func() {
			keys, _, err := clientKeys(Config{DataDir: dataDir, Secret: os.Getenv("UNDERSTUDY_SECRET"), MaxTokenLifetime: maxLife})
			if err != nil {
				keysErr = err
				return
			}
			sign = keys.Sign
		})
		if keysErr != nil {
			return "", keysErr
		}
		return sign(dispatch.Identity{Subject: sub, Role: role}, ttl)
	}, nil
}

func readLines(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 8192), 1<<20)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out, sc.Err()
}

// printSummary writes the summary for people.
func printSummary(w io.Writer, file loadtest.File, s sim.Summary) {
	fmt.Fprintf(w, "\nscenario %s against %s (run %s): %d drivers, %g rides/s, %.0fs of load, drained in %.0fs\n\n",
		s.Scenario, s.URL, s.RunID, s.Drivers, s.RidersPerS, s.Seconds, s.Drained)
	for _, m := range file.Metrics {
		st := s.Metrics[m.Name]
		switch m.Kind {
		case loadtest.Trend:
			if st.Count == 0 {
				fmt.Fprintf(w, "  %-20s no samples\n", m.Name)
				continue
			}
			fmt.Fprintf(w, "  %-20s n=%-7d med %7.1fms  p90 %7.1fms  p95 %7.1fms  p99 %7.1fms  max %7.1fms\n",
				m.Name, st.Count, st.Med, st.P90, st.P95, st.P99, st.Max)
		case loadtest.Rate:
			if st.Count == 0 {
				fmt.Fprintf(w, "  %-20s no samples\n", m.Name)
				continue
			}
			fmt.Fprintf(w, "  %-20s %6.2f%% of %d\n", m.Name, 100*st.Rate, st.Count)
		default:
			fmt.Fprintf(w, "  %-20s %-8d %10.1f/s\n", m.Name, st.Count, st.PerS)
		}
	}
	fmt.Fprintln(w, "\nthresholds:")
	for _, t := range s.Thresholds {
		mark, val := "ok  ", fmt.Sprintf("%.4g", t.Value)
		if !t.OK {
			mark = "FAIL"
		}
		if t.NoData || math.IsNaN(t.Value) {
			val = "no samples"
		}
		fmt.Fprintf(w, "  %s %-20s %-14s (%s)\n", mark, t.Metric, t.Expr, val)
	}
	fmt.Fprintln(w, "\nchecks:")
	for _, c := range s.Checks {
		fmt.Fprintln(w, "  "+c)
	}
	for _, p := range s.Problems {
		fmt.Fprintln(w, "  PROBLEM "+p)
	}
	for _, e := range s.Errors {
		fmt.Fprintln(w, "  error: "+e)
	}
	if s.Passed {
		fmt.Fprintln(w, "\nPASSED")
	} else {
		fmt.Fprintln(w, "\nFAILED: a threshold failed")
	}
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	*l = append(*l, v)
	return nil
}
