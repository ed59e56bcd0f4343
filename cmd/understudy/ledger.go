package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/natslog"
)

// ledgerCmd is `understudy ledger export [--since RFC3339] [--driver ID]`: every
// ledger entry as NDJSON, in order, for settlement with the primary platform. It reads
// the deployment's NATS (--nats), the embedded server of a region running on
// --data-dir, or, when none runs, the data directory itself.
func ledgerCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "export" {
		return errors.New("usage: understudy ledger export [--since RFC3339] [--driver ID] [--data-dir DIR | --nats URL]")
	}
	fs := flag.NewFlagSet("ledger export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", defaultConfig().DataDir, "`directory` of the region whose embedded ledger to read")
	natsURL := fs.String("nats", os.Getenv("UNDERSTUDY_NATS"), "NATS `URL` of the deployment (instead of --data-dir)")
	sinceStr := fs.String("since", "", "only trips completed at or after this RFC 3339 `time`")
	driverID := fs.String("driver", "", "only this driver's trips")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	var since time.Time
	if *sinceStr != "" {
		t, err := time.Parse(time.RFC3339, *sinceStr)
		if err != nil {
			return fmt.Errorf("--since: %w", err)
		}
		since = t
	}
	nc, done, err := ledgerConn(*natsURL, *dataDir)
	if err != nil {
		return err
	}
	defer done()
	l, err := natslog.OpenLedger(ctx, nc, 1)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	return l.Entries(ctx, since, *driverID, func(e dispatch.LedgerEntry) error { return enc.Encode(e) })
}

// ledgerConn connects to the NATS that holds the ledger and returns how to let go of it.
func ledgerConn(natsURL, dataDir string) (*nats.Conn, func(), error) {
	if natsURL != "" {
		nc, err := natslog.Connect(natsURL)
		if err != nil {
			return nil, nil, err
		}
		return nc, nc.Close, nil
	}
	if b, err := os.ReadFile(filepath.Join(dataDir, natsURLFile)); err == nil {
		// A region may be running on this data dir: use its embedded server.
		if nc, err := nats.Connect(strings.TrimSpace(string(b)), nats.Timeout(2*time.Second)); err == nil {
			return nc, nc.Close, nil
		}
	}
	if _, err := os.Stat(filepath.Join(dataDir, "nats")); err != nil {
		return nil, nil, fmt.Errorf("no ledger in %s: %w", dataDir, err)
	}
	emb, err := natslog.StartEmbedded(filepath.Join(dataDir, "nats"), "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	nc, err := emb.Connect()
	if err != nil {
		emb.Close()
		return nil, nil, err
	}
	return nc, func() { nc.Close(); emb.Close() }, nil
}
