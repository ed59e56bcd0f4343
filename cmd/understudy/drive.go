package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/driver"
	"github.com/understudy/understudy/driver/client"
)

// drive is `understudy drive --sub d-42 --lat 37.5668 --lng 126.9783 [--auto]`: a driver
// app for demos and manual tests. It connects with a token signed by the data
// directory's secret, goes available and prints every frame it gets; with --auto it
// accepts each offer and drives the trip to completion.
func drive(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("drive", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8080", "`address` of the region")
	sub := fs.String("sub", "d-1", "driver `id`")
	lat := fs.Float64("lat", 37.5668, "latitude")
	lng := fs.Float64("lng", 126.9783, "longitude")
	auto := fs.Bool("auto", false, "accept every offer and complete the trip")
	step := fs.Duration("step", 2*time.Second, "with --auto, the pause between trip steps")
	dataDir := fs.String("data-dir", defaultConfig().DataDir, "the server's `directory`, holding its development secret")
	maxLife := maxLifetimeFlag(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	at := dispatch.Point{Lat: *lat, Lng: *lng}
	if err := at.Validate(); err != nil {
		return err
	}
	keys, source, err := clientKeys(Config{DataDir: *dataDir, Secret: os.Getenv("UNDERSTUDY_SECRET"), MaxTokenLifetime: *maxLife})
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "understudy drive: token signed with %s\n", source)
	tok, err := keys.Sign(dispatch.Identity{Subject: *sub, Role: dispatch.RoleDriver}, *maxLife)
	if err != nil {
		return err
	}
	d := client.Dialer{Reconnect: true}
	c, err := d.Dial(ctx, "ws://"+*addr+driver.Path, tok)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Location(ctx, at); err != nil {
		return err
	}
	if err := c.Available(ctx); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-c.Frames():
			if !ok {
				if err := c.Err(); !errors.Is(err, client.ErrClosed) {
					return err
				}
				return nil
			}
			fmt.Fprintf(stdout, "%s\n", bytes.TrimSpace(m.Raw))
			if *auto && m.Type == driver.TypeOffer {
				go autoTrip(ctx, c, m, *step, stderr)
			}
		}
	}
}

// autoTrip accepts offer m and reports arrived, start and complete a step apart.
func autoTrip(ctx context.Context, c *client.Client, m driver.Message, step time.Duration, stderr io.Writer) {
	if err := c.Accept(ctx, m.OfferID); err != nil {
		fmt.Fprintln(stderr, "accept:", err)
		return
	}
	for _, send := range []func(context.Context, string) error{c.Arrived, c.Start, c.Complete} {
		select {
		case <-ctx.Done():
			return
		case <-time.After(step):
		}
		if err := send(ctx, m.RideID); err != nil {
			fmt.Fprintln(stderr, "trip step:", err)
			return
		}
	}
}
