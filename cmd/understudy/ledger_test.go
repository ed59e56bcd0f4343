package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/understudy/understudy/dispatch"
)

// A completed trip is in the ledger exactly once, however often complete is retried,
// and the ledger outlives the process.
func TestCompletedTripReachesTheLedgerOnce(t *testing.T) {
	ctx := context.Background()
	dataDir := t.TempDir()
	s := mustServe(t, "--data-dir", dataDir, "--match-interval", "0")
	e := s.engine
	p := dispatch.Point{Lat: 37.4979, Lng: 127.0276}
	engineOnline(t, e, "d-1", p)
	ride := acceptedRide(t, e, p, dispatch.Point{Lat: 37.5547, Lng: 126.9707})
	// complete three times: the app retries when it misses the acknowledgement.
	for _, step := range []func(context.Context, string, string) (dispatch.Ride, error){e.Drivers().Arrived, e.Drivers().Start, e.Drivers().Complete, e.Drivers().Complete, e.Drivers().Complete} {
		if _, err := step(ctx, "d-1", ride.ID); err != nil {
			t.Fatal(err)
		}
	}
	var got []dispatch.LedgerEntry
	if err := s.ledger.Entries(ctx, time.Time{}, "d-1", func(le dispatch.LedgerEntry) error {
		got = append(got, le)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].RideID != ride.ID || got[0].Fare != ride.Fare || got[0].Region != "local" ||
		got[0].CompletedAt.IsZero() || got[0].StartedAt.IsZero() {
		t.Fatalf("ledger = %+v", got)
	}

	// `understudy ledger export` reads it from the running region...
	export := func() []dispatch.LedgerEntry {
		t.Helper()
		var out bytes.Buffer
		if err := run(ctx, []string{"ledger", "export", "--data-dir", dataDir, "--since", ride.CreatedAt.Format(time.RFC3339)}, &out, io.Discard); err != nil {
			t.Fatalf("ledger export: %v", err)
		}
		var entries []dispatch.LedgerEntry
		for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			var le dispatch.LedgerEntry
			if err := json.Unmarshal([]byte(line), &le); err != nil {
				t.Fatalf("export line %q: %v", line, err)
			}
			entries = append(entries, le)
		}
		return entries
	}
	if got := export(); len(got) != 1 || got[0].RideID != ride.ID || got[0].Seq == 0 {
		t.Fatalf("export while running = %+v", got)
	}
	// ...and from its data directory once the region has stopped.
	stopServer(t, s)
	if got := export(); len(got) != 1 || got[0].RideID != ride.ID {
		t.Fatalf("export after stop = %+v", got)
	}
}
