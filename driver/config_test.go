package driver_test

import (
	"flag"
	"strings"
	"testing"

	"github.com/understudy/understudy/driver"
)

// The defaults are valid, and every setting of a zero Config is out of range and named
// in the error by the name RegisterFlags gives it.
func TestConfigValidateNamesEachSetting(t *testing.T) {
	if err := driver.DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	err := driver.Config{}.Validate()
	if err == nil {
		t.Fatal("zero Config accepted")
	}
	var c driver.Config
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	c.RegisterFlags(fs)
	fs.VisitAll(func(f *flag.Flag) {
		if !strings.Contains(err.Error(), f.Name+" ") {
			t.Errorf("zero %s not reported: %v", f.Name, err)
		}
	})
	c = driver.DefaultConfig()
	c.ReadTimeout = c.PingInterval
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "driver-read-timeout") {
		t.Errorf("read timeout = ping interval: %v, want driver-read-timeout named", err)
	}
	c = driver.DefaultConfig()
	c.FrameReadRate = c.FrameRate / 2
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "driver-frame-read-rate") {
		t.Errorf("read rate under frame rate: %v, want driver-frame-read-rate named", err)
	}
}
