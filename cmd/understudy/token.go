package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/understudy/understudy/dispatch"
)

// token is `understudy token --role driver --sub d-42 --ttl 1h`: it prints a token
// signed with the development secret (UNDERSTUDY_SECRET or the data directory's).
func token(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	role := fs.String("role", "", "driver, rider or admin")
	sub := fs.String("sub", "", "the driver or rider `id`")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	dataDir := fs.String("data-dir", defaultConfig().DataDir, "`directory` holding the generated secret")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *sub == "" || !dispatch.Role(*role).Valid() {
		return errors.New("token needs --sub and --role driver, rider or admin")
	}
	if *ttl <= 0 {
		return errors.New("--ttl must be positive")
	}
	cfg := defaultConfig()
	cfg.DataDir = *dataDir
	cfg.Secret = os.Getenv("UNDERSTUDY_SECRET")
	keys, err := loadKeys(cfg)
	if err != nil {
		return err
	}
	tok, err := keys.Sign(dispatch.Identity{Subject: *sub, Role: dispatch.Role(*role)}, *ttl)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
