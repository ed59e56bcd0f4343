package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// settingValues holds, for every setting of serve, a valid value other than its
// default, as written on a command line (a list: comma-separated). The tests below
// iterate the declared settings and fail for one missing here, so a new setting cannot
// be forgotten.
var settingValues = map[string]string{
	"region":                  "jeju",
	"addr":                    "127.0.0.1:9999",
	"data-dir":                "/srv/understudy",
	"redis":                   "redis://127.0.0.1:6390/1",
	"nats":                    "nats://127.0.0.1:4299",
	"log-level":               "debug",
	"jwt-public-keys":         "/etc/understudy/keys.pem",
	"max-token-lifetime":      "2h0m0s",
	"allowed-origin":          "https://a.example,https://b.example",
	"map-tiles":               "https://tiles.example/{z}/{x}/{y}.png",
	"shutdown-timeout":        "20s",
	"debug-addr":              "127.0.0.1:6061",
	"read-header-timeout":     "5s",
	"read-timeout":            "40s",
	"write-timeout":           "45s",
	"idle-timeout":            "2m0s",
	"max-conns":               "300",
	"h3-res":                  "8",
	"match-interval":          "250ms",
	"offer-timeout":           "20s",
	"max-search":              "3m0s",
	"max-radius":              "2500.5",
	"candidates":              "12",
	"max-missed-offers":       "5",
	"sweep-interval":          "5s",
	"fare-currency":           "USD",
	"fare-base":               "300",
	"fare-per-km":             "120",
	"fare-per-minute":         "30",
	"fare-minimum":            "500",
	"fare-avg-speed-kmh":      "30.5",
	"fare-route-factor":       "1.4",
	"fare-cancellation-fee":   "2500",
	"max-body-bytes":          "32768",
	"idempotency-ttl":         "12h0m0s",
	"idempotency-pending-ttl": "2m0s",
	"idempotency-wait":        "3s",
	"sse-heartbeat":           "20s",
	"sse-location-interval":   "2s",
	"sse-buffer":              "32",
	"sse-max-streams":         "4",
	"rider-rate":              "2.5",
	"rider-burst":             "7",
	"rider-sweep-interval":    "30s",
	"driver-grace":            "1m30s",
	"driver-ping-interval":    "20s",
	"driver-read-timeout":     "50s",
	"driver-write-timeout":    "5s",
	"driver-close-timeout":    "3s",
	"driver-op-timeout":       "4s",
	"driver-max-frame-bytes":  "8192",
	"driver-frame-rate":       "12.5",
	"driver-frame-burst":      "50",
	"driver-flood-window":     "20s",
	"driver-frame-read-rate":  "150",
	"driver-send-queue":       "128",
	"driver-border-locations": "5",
	"deployment":              "testdata/deployment.json", // its regions include the default, local
	"driver-read-buffer":      "1024",
	"driver-write-buffer":     "2048",
}

// declared is serve's settings, as flags bound to a default Config.
func declared() *flag.FlagSet {
	c := defaultConfig()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	c.RegisterFlags(fs)
	return fs
}

// settingsOf is every setting of c by name, as its flag prints it.
func settingsOf(c Config) map[string]string {
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	c.RegisterFlags(fs)
	m := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) { m[f.Name] = f.Value.String() })
	return m
}

func isListSetting(name string) bool { return isList(declared().Lookup(name)) }

// source is one way to give settings: flags, environment variables, a config file.
type source struct {
	args []string
	env  map[string]string
	file map[string]any
}

func (s *source) flag(name, v string) {
	if isListSetting(name) {
		for _, e := range strings.Split(v, ",") {
			s.args = append(s.args, "--"+name, e)
		}
		return
	}
	s.args = append(s.args, "--"+name+"="+v)
}

func (s *source) setEnv(name, v string) {
	if s.env == nil {
		s.env = map[string]string{}
	}
	s.env["UNDERSTUDY_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))] = v
}

// setFile writes v as JSON does: a list as an array, a number as a number.
func (s *source) setFile(name, v string) {
	if s.file == nil {
		s.file = map[string]any{}
	}
	switch _, err := strconv.ParseFloat(v, 64); {
	case isListSetting(name):
		s.file[name] = strings.Split(v, ",")
	case err == nil:
		s.file[name] = json.Number(v)
	default:
		s.file[name] = v
	}
}

func (s *source) load(t *testing.T) (Config, error) {
	t.Helper()
	args := s.args
	if s.file != nil {
		b, err := json.Marshal(s.file)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "understudy.json")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		args = append([]string{"--config", path}, args...)
	}
	return loadConfig(args, func(k string) string { return s.env[k] }, io.Discard)
}

// Every setting can be given by flag, environment variable and config file under one
// name, and the higher source wins: defaults < file < environment < flags.
func TestConfigPrecedence(t *testing.T) {
	defaults := settingsOf(defaultConfig())
	for _, name := range slices.Sorted(maps.Keys(settingValues)) {
		if _, ok := defaults[name]; !ok {
			t.Errorf("%s has a test value but is not a setting", name)
		}
	}
	declared().VisitAll(func(f *flag.Flag) {
		name, def := f.Name, f.DefValue
		want, ok := settingValues[name]
		if !ok {
			t.Errorf("setting %s has no test value in settingValues", name)
			return
		}
		if want == def {
			t.Errorf("setting %s: test value %q is its default", name, want)
			return
		}
		expected := maps.Clone(defaults)
		expected[name] = want
		for _, c := range []struct {
			how string
			set func(*source)
		}{
			{"flag", func(s *source) { s.flag(name, want) }},
			{"env", func(s *source) { s.setEnv(name, want) }},
			{"file", func(s *source) { s.setFile(name, want) }},
			{"env over file", func(s *source) { s.setFile(name, def); s.setEnv(name, want) }},
			{"flag over env and file", func(s *source) { s.setFile(name, def); s.setEnv(name, def); s.flag(name, want) }},
		} {
			if def == "" && strings.Contains(c.how, "over") {
				continue // an empty environment variable is no variable
			}
			var s source
			c.set(&s)
			cfg, err := s.load(t)
			if err != nil {
				t.Errorf("%s by %s: %v", name, c.how, err)
				continue
			}
			if got := settingsOf(cfg); !maps.Equal(got, expected) {
				for k := range expected {
					if got[k] != expected[k] {
						t.Errorf("%s=%s by %s: %s is %q, want %q", name, want, c.how, k, got[k], expected[k])
					}
				}
			}
		}
	})

	// A config file that sets several things, partly overridden.
	dir := t.TempDir()
	file := filepath.Join(dir, "understudy.json")
	if err := os.WriteFile(file, []byte(`{"addr":"127.0.0.1:1","offer-timeout":"20s","max-search":"3m",
		"max-token-lifetime":"2h","fare-base":3000,"candidates":"4","allowed-origin":["https://x.example"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"UNDERSTUDY_MAX_SEARCH": "4m", "UNDERSTUDY_ADDR": "127.0.0.1:2",
		"UNDERSTUDY_SECRET": "a-secret-from-the-environment"}
	cfg, err := loadConfig([]string{"--config", file, "--addr", "127.0.0.1:3", "--match-interval", "0"},
		func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Dispatch
	if cfg.Addr != "127.0.0.1:3" || d.OfferTimeout != 20*time.Second || d.MaxSearch != 4*time.Minute ||
		d.MatchInterval != 0 || d.Fare.Base != 3000 || d.Fare.PerKm != 760 || d.Candidates != 4 ||
		cfg.MaxTokenLifetime != 2*time.Hour || !slices.Equal(cfg.AllowedOrigins, []string{"https://x.example"}) ||
		cfg.Secret != env["UNDERSTUDY_SECRET"] {
		t.Fatalf("flags > env > file > defaults broken: %+v", cfg)
	}
	// UNDERSTUDY_CONFIG names the file too; the event streams' write timeout is the
	// HTTP one.
	cfg, err = loadConfig([]string{"--write-timeout", "12s"}, func(k string) string {
		return map[string]string{"UNDERSTUDY_CONFIG": file}[k]
	}, io.Discard)
	if err != nil || cfg.Dispatch.Fare.Base != 3000 || cfg.Rider.StreamWriteTimeout != 12*time.Second {
		t.Fatalf("UNDERSTUDY_CONFIG: fare base %d, stream write timeout %s, %v",
			cfg.Dispatch.Fare.Base, cfg.Rider.StreamWriteTimeout, err)
	}
}

// badValues holds, for every setting that can be out of range, such a value; anyValue
// lists the settings that take any value. A setting in neither fails the test.
var (
	badValues = map[string]string{
		"map-tiles": "ftp://tiles.example/{z}/{x}.png",
		"region":    "seoul:1", "addr": "", "data-dir": "", "log-level": "loud",
		"max-token-lifetime": "0s", "shutdown-timeout": "0s", "debug-addr": "6061",
		"read-header-timeout": "0s", "read-timeout": "0s", "write-timeout": "0s", "idle-timeout": "-1s", "max-conns": "-1",
		"h3-res": "20", "match-interval": "-1s", "offer-timeout": "0s", "max-search": "0s", "max-radius": "0",
		"candidates": "0", "max-missed-offers": "-1", "sweep-interval": "-1s",
		"fare-currency": "won", "fare-base": "-1", "fare-per-km": "-1", "fare-per-minute": "-1", "fare-minimum": "-1",
		"fare-avg-speed-kmh": "0", "fare-route-factor": "0.5", "fare-cancellation-fee": "-1",
		"max-body-bytes": "100", "idempotency-ttl": "0s", "idempotency-pending-ttl": "0s", "idempotency-wait": "-1s",
		"sse-heartbeat": "0s", "sse-location-interval": "0s", "sse-buffer": "0", "sse-max-streams": "0",
		"rider-rate": "0", "rider-burst": "0", "rider-sweep-interval": "0s",
		"driver-grace": "0s", "driver-ping-interval": "0s", "driver-read-timeout": "25s", "driver-write-timeout": "0s",
		"driver-close-timeout": "0s", "driver-op-timeout": "0s", "driver-max-frame-bytes": "0", "driver-frame-rate": "0",
		"driver-frame-burst": "0", "driver-flood-window": "0s", "driver-frame-read-rate": "5", "driver-send-queue": "0",
		"driver-read-buffer": "0", "driver-write-buffer": "0", "driver-border-locations": "0",
		"deployment": "testdata/no-such-deployment.json",
	}
	anyValue = []string{"redis", "nats", "jwt-public-keys", "allowed-origin"}
)

// A setting out of range is refused, whichever way it came, with an error that names
// it; so are unknown settings and values that do not parse.
func TestConfigErrors(t *testing.T) {
	declared().VisitAll(func(f *flag.Flag) {
		name := f.Name
		bad, ok := badValues[name]
		if !ok {
			if !slices.Contains(anyValue, name) {
				t.Errorf("setting %s is in neither badValues nor anyValue", name)
			}
			return
		}
		for how, set := range map[string]func(*source){
			"flag": func(s *source) { s.flag(name, bad) },
			"env":  func(s *source) { s.setEnv(name, bad) },
			"file": func(s *source) { s.setFile(name, bad) },
		} {
			if how == "env" && bad == "" {
				continue
			}
			var s source
			set(&s)
			if _, err := s.load(t); err == nil || !strings.Contains(err.Error(), name) {
				t.Errorf("%s=%q by %s: %v, want an error naming %s", name, bad, how, err, name)
			}
		}
	})

	dir := t.TempDir()
	write := func(name, text string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	for _, c := range []struct {
		args []string
		env  map[string]string
		want []string
	}{
		{args: []string{"--offer-timeout", "soon"}, want: []string{"offer-timeout", `"soon"`}},
		{env: map[string]string{"UNDERSTUDY_OFFER_TIMEOUT": "soon"}, want: []string{"offer-timeout", "UNDERSTUDY_OFFER_TIMEOUT", `"soon"`}},
		{args: []string{"--config", write("dur.json", `{"offer-timeout":"soon"}`)}, want: []string{"dur.json", "offer-timeout", `"soon"`}},
		{args: []string{"--config", write("num.json", `{"candidates":2.5}`)}, want: []string{"candidates", "2.5"}},
		{args: []string{"--config", write("typo.json", `{"offer-timout":"20s"}`)}, want: []string{"typo.json", `unknown setting "offer-timout"`}},
		{args: []string{"--config", write("old.json", `{"offer_timeout":"20s"}`)}, want: []string{`unknown setting "offer_timeout"`, `"offer-timeout"`}},
		{args: []string{"--config", write("nested.json", `{"fare":{"base":1}}`)}, want: []string{`unknown setting "fare"`, "fare-base"}},
		{args: []string{"--config", write("object.json", `{"fare-base":{"amount":1}}`)}, want: []string{"fare-base", "object"}},
		{args: []string{"--config", write("list.json", `{"region":["a","b"]}`)}, want: []string{"region", "one value"}},
		{args: []string{"--config", write("self.json", `{"config":"other.json"}`)}, want: []string{`"config"`}},
		{args: []string{"--config", write("secret.json", `{"secret":"in-a-file-is-wrong"}`)}, want: []string{`unknown setting "secret"`}},
		{args: []string{"--config", write("broken.json", `{"region":`)}, want: []string{"broken.json"}},
		{args: []string{"--config", filepath.Join(dir, "missing.json")}, want: []string{"read config", "missing.json"}},
		{args: []string{"--secret", "no-flag-for-this"}, want: []string{"secret"}},
		{args: []string{"stray"}, want: []string{"unexpected arguments"}},
	} {
		_, err := loadConfig(c.args, func(k string) string { return c.env[k] }, io.Discard)
		for _, w := range c.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%v %v: %v, want an error mentioning %q", c.args, c.env, err, w)
			}
		}
	}
}

// `understudy serve -h` lists every setting and says how else to give it.
func TestServeHelpListsEverySetting(t *testing.T) {
	var out bytes.Buffer
	if err := run(t.Context(), []string{"serve", "-h"}, io.Discard, &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("serve -h: %v", err)
	}
	help := out.String()
	declared().VisitAll(func(f *flag.Flag) {
		if !strings.Contains(help, fmt.Sprintf("  -%s ", f.Name)) && !strings.Contains(help, fmt.Sprintf("  -%s\n", f.Name)) {
			t.Errorf("serve -h does not list %s", f.Name)
		}
	})
	for _, want := range []string{"-config", "UNDERSTUDY_OFFER_TIMEOUT", `"offer-timeout"`, "UNDERSTUDY_SECRET"} {
		if !strings.Contains(help, want) {
			t.Errorf("serve -h does not mention %s:\n%s", want, help)
		}
	}
}
