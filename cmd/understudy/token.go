package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/jwtauth"
)

// token is `understudy token --role driver --sub d-42 --ttl 1h`: it prints a token
// signed with the development secret (UNDERSTUDY_SECRET or the data directory's), and
// says on stderr which one. It never makes a secret (only serve does) and never mints
// a token valid for longer than servers accept.
func token(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	role := fs.String("role", "", "driver, rider or admin")
	sub := fs.String("sub", "", "the driver or rider `id`: 1 to 128 ASCII letters, digits and "+dispatch.SubjectChars)
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	dataDir := fs.String("data-dir", defaultConfig().DataDir, "the server's `directory`, holding its generated secret")
	maxLife := maxLifetimeFlag(fs)
	link := fs.Bool("link", false, "print a sign-in link to the role's web app (/driver/, /ride/, /ops/) instead of the bare token")
	base := fs.String("url", "http://127.0.0.1:8080", "the region's public `URL`, for --link")
	if err := fs.Parse(args); err != nil {
		return err
	}
	id := dispatch.Identity{Subject: *sub, Role: dispatch.Role(*role)}
	if err := id.Validate(); err != nil {
		return fmt.Errorf("token needs --sub and --role driver, rider or admin: %w", err)
	}
	if *ttl <= 0 {
		return errors.New("--ttl must be positive")
	}
	if *maxLife <= 0 {
		return errors.New("--max-token-lifetime must be positive")
	}
	if *ttl > *maxLife {
		return fmt.Errorf("--ttl %s is over the maximum token lifetime %s, which servers refuse: "+
			"raise --max-token-lifetime (or UNDERSTUDY_MAX_TOKEN_LIFETIME) here and on the servers alike", *ttl, *maxLife)
	}
	keys, source, err := clientKeys(Config{DataDir: *dataDir, Secret: os.Getenv("UNDERSTUDY_SECRET"), MaxTokenLifetime: *maxLife})
	if err != nil {
		return err
	}
	tok, err := keys.Sign(id, *ttl)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "understudy token: signed with %s; a server verifies it only with the same secret\n", source)
	if *link {
		if u, err := url.Parse(*base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("--url %q: want the region's http(s) URL", *base)
		}
		fmt.Fprintln(stdout, signInLink(*base, *role, tok))
		return nil
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

// maxLifetimeFlag declares --max-token-lifetime for a client command, defaulting to
// UNDERSTUDY_MAX_TOKEN_LIFETIME as serve's does, so both agree by default.
func maxLifetimeFlag(fs *flag.FlagSet) *time.Duration {
	def := jwtauth.DefaultMaxLifetime
	if v, err := time.ParseDuration(os.Getenv("UNDERSTUDY_MAX_TOKEN_LIFETIME")); err == nil {
		def = v
	}
	return fs.Duration("max-token-lifetime", def, "the servers' --max-token-lifetime: mint nothing valid for longer")
}
