// Command understudy runs one region of the Understudy dispatch fallback.
//
//	understudy [serve] [flags]   run the region (the default)
//	understudy token --role R --sub ID [--ttl 1h]   mint a development token
//	understudy ledger export [--since T]          completed trips as NDJSON
//	understudy drive --sub ID --lat LAT --lng LNG [--auto]  a demo driver
//	understudy dev-cluster [--deployment FILE] [--dir DIR]  three regions on loopback
//	understudy sim [--scenario mixed] [--url URL] [--json]  the load simulator
//	understudy version           print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "understudy:", err)
		}
		os.Exit(2)
	}
}

// run executes one command line; it is main without the process around it, for tests.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(ctx, args, stdout, stderr, nil)
	case "drive":
		return drive(ctx, args, stdout, stderr)
	case "dev-cluster":
		return devCluster(ctx, args, stdout, stderr)
	case "ledger":
		return ledgerCmd(ctx, args, stdout, stderr)
	case "token":
		return token(args, stdout, stderr)
	case "sim":
		return simCmd(ctx, args, stdout, stderr)
	case "regions":
		return regionsCmd(ctx, args, stdout, stderr)
	case "areas":
		return areasCmd(ctx, args, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, versionString())
		return nil
	case "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return fmt.Errorf("unknown command %q\n%s", cmd, usage)
}

const usage = `usage: understudy <command> [flags]

commands:
  serve     run one region (the default when no command is given)
  token     print a development token: token --role driver --sub d-42 --ttl 1h
  ledger    ledger export [--since RFC3339]: completed trips as NDJSON, for settlement
  drive     a demo driver: drive --sub d-42 --lat 37.5668 --lng 126.9783 --auto
  dev-cluster  three regions on this machine, one process each: dev-cluster [--dir DIR]
  sim       load a region or a deployment with a simulated fleet: sim --scenario mixed --url URL [--json]
  regions   who serves each area, under which epoch, which regions are up: regions --url URL
  areas     hand an area over: areas move AREA --to REGION --url URL (admin)
  version   print the version
Run 'understudy serve -h' for serve's flags.
`
