package natslog_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/natslog"
)

// Ids of any length and content are one subject token each: a 5 KB or 200 KB id
// used to make a subject over the server's control line limit, after which the
// client closed its connection for good.
func TestLongAndStrangeIDsKeepTheConnection(t *testing.T) {
	ctx := context.Background()
	nc, stop := mustConnect(t, t.TempDir())
	t.Cleanup(stop)
	l, err := natslog.OpenLedger(ctx, nc, 1)
	if err != nil {
		t.Fatal(err)
	}
	region := strings.Repeat("r", 5<<10)
	rl, err := natslog.OpenRideLog(ctx, nc, region, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{strings.Repeat("d", 5<<10), strings.Repeat("d", 200<<10), "d 1\r\nPUB x 0", "d.*", ""} {
		if id != "" {
			if _, err := l.Record(ctx, entry(id, id, t0)); err != nil {
				t.Fatalf("record %d bytes: %v", len(id), err)
			}
			if got := collect(t, l, time.Time{}, id); len(got) != 1 || got[0].DriverID != id {
				t.Fatalf("entries of a %d-byte driver: %d", len(id), len(got))
			}
		}
		if err := rl.Append(ctx, []dispatch.Ride{{ID: id, Status: dispatch.RideSearching, Version: 1}}); err != nil {
			t.Fatalf("append ride of %d bytes: %v", len(id), err)
		}
		if st := nc.Status(); st != nats.CONNECTED {
			t.Fatalf("after a %d-byte id the connection is %s: %v", len(id), st, nc.LastError())
		}
	}
	n := 0
	if err := rl.Latest(ctx, func(dispatch.Ride) error { n++; return nil }); err != nil || n != 5 {
		t.Fatalf("ride log of the long region: %d rides, %v", n, err)
	}
	if got := collect(t, l, time.Time{}, "d-1"); len(got) != 0 {
		t.Fatalf("d-1 sees %d entries of others", len(got))
	}
}

// Entries written under the subjects of earlier versions read back by driver:
// the encoding of ids that were usable before has not changed.
func TestLedgerReadsEntriesOfEarlierVersions(t *testing.T) {
	ctx := context.Background()
	nc, stop := mustConnect(t, t.TempDir())
	t.Cleanup(stop)
	l, err := natslog.OpenLedger(ctx, nc, 1)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	long := strings.Repeat("x.", 64) // 128 bytes, all allowed in a token's sub
	for _, e := range []struct{ subject, driver, ride string }{
		{"understudy.ledger.d-42.r_abc", "d-42", "r_abc"},
		{"understudy.ledger.~642e322a3e.r_1", "d.2*>", "r_1"},
		{"understudy.ledger.~61757468307c7540782e79.r_2", "auth0|u@x.y", "r_2"},
		{"understudy.ledger.~" + strings.Repeat("782e", 64) + ".r_3", long, "r_3"},
	} {
		body, _ := json.Marshal(entry(e.ride, e.driver, t0))
		if _, err := js.Publish(ctx, e.subject, body); err != nil {
			t.Fatal(err)
		}
		if got := collect(t, l, time.Time{}, e.driver); len(got) != 1 || got[0].RideID != e.ride {
			t.Errorf("driver %q: %+v, want ride %s", e.driver, got, e.ride)
		}
		// And a retried completion finds it rather than adding a second one.
		if again, err := l.Record(ctx, entry(e.ride, e.driver, t0)); err != nil || again.Seq == 0 {
			t.Errorf("record %s again: %+v %v", e.ride, again, err)
		}
		if got := collect(t, l, time.Time{}, e.driver); len(got) != 1 {
			t.Errorf("driver %q after a retry: %d entries", e.driver, len(got))
		}
	}
}
