package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/understudy/understudy/dispatch"
)

// The operator's commands: what an on-call runs against any region, from any
// machine that reaches one, with the primary platform dark.

// regionsCmd is `understudy regions [--url URL] [--json]`: who serves what, under
// which epoch, and which regions are up, as the region at URL sees it.
func regionsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("regions", flag.ContinueOnError)
	fs.SetOutput(stderr)
	base := fs.String("url", "http://127.0.0.1:8080", "any region's base `URL`")
	asJSON := fs.Bool("json", false, "print GET /v1/regions as it came")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(*base, "/")+"/v1/regions", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("ask %s: %w (try another region's URL)", *base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /v1/regions at %s: %d %s", *base, resp.StatusCode, bytes.TrimSpace(body))
	}
	if *asJSON {
		_, err := stdout.Write(body)
		return err
	}
	var v dispatch.RegionsView
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("GET /v1/regions at %s: %w", *base, err)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REGION\tURL\tUP")
	for _, r := range v.Regions {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Name, r.URL, tri(r.Up))
	}
	fmt.Fprintln(tw, "\nAREA\tHOME\tSERVED BY\tEPOCH")
	for _, a := range v.Areas {
		by, epoch := "nobody (no lease)", "-"
		if a.ServedBy != nil {
			by = *a.ServedBy
		}
		if a.Epoch != nil {
			epoch = fmt.Sprint(*a.Epoch)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", a.Name, a.Home, by, epoch)
	}
	return tw.Flush()
}

func tri(b *bool) string {
	switch {
	case b == nil:
		return "unknown"
	case *b:
		return "yes"
	}
	return "NO"
}

// areasCmd is `understudy areas move AREA --to REGION [--url URL]`: the admin move,
// asked of any region (it is passed on to the area's holder).
func areasCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) < 2 || args[0] != "move" || strings.HasPrefix(args[1], "-") {
		return errors.New("usage: understudy areas move AREA --to REGION [--url URL] [--token TOKEN | --data-dir DIR]")
	}
	area := args[1]
	fs := flag.NewFlagSet("areas move", flag.ContinueOnError)
	fs.SetOutput(stderr)
	base := fs.String("url", "http://127.0.0.1:8080", "any region's base `URL`")
	to := fs.String("to", "", "the `region` to hand the area to")
	tok := fs.String("token", os.Getenv("UNDERSTUDY_TOKEN"), "an admin `token` (default $UNDERSTUDY_TOKEN; else one is signed with the development secret)")
	dataDir := fs.String("data-dir", defaultConfig().DataDir, "the `directory` holding the development secret, to sign an admin token")
	if err := fs.Parse(args[2:]); err != nil {
		return err
	}
	if *to == "" {
		return errors.New("areas move needs --to REGION")
	}
	if *tok == "" {
		keys, _, err := clientKeys(Config{DataDir: *dataDir, Secret: os.Getenv("UNDERSTUDY_SECRET"), MaxTokenLifetime: time.Hour})
		if err != nil {
			return fmt.Errorf("no --token, and no development secret to sign one: %w", err)
		}
		if *tok, err = keys.Sign(dispatch.Identity{Subject: "operator", Role: dispatch.RoleAdmin}, 5*time.Minute); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	payload, _ := json.Marshal(moveRequest{To: *to})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(*base, "/")+"/v1/admin/areas/"+area+"/move", bytes.NewReader(payload))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+*tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("ask %s: %w (try another region's URL)", *base, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		var p struct{ Detail, Code string }
		if json.Unmarshal(body, &p) == nil && p.Detail != "" {
			return fmt.Errorf("move %s to %s: %d %s: %s", area, *to, resp.StatusCode, p.Code, p.Detail)
		}
		return fmt.Errorf("move %s to %s: %d %s", area, *to, resp.StatusCode, bytes.TrimSpace(body))
	}
	var res MoveResult
	if err := json.Unmarshal(body, &res); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "area %s moved from %s to %s, epoch %d\n", res.Area, res.From, res.To, res.Epoch)
	return nil
}
