package natslog_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/natslog"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// mustOpenLedger starts an embedded JetStream in dir and opens the ledger on it.
func mustOpenLedger(tb testing.TB, dir string) (*natslog.Ledger, func()) {
	tb.Helper()
	nc, stop := mustConnect(tb, dir)
	l, err := natslog.OpenLedger(context.Background(), nc, 1)
	if err != nil {
		stop()
		tb.Fatal(err)
	}
	return l, stop
}

var t0 = time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)

func entry(ride, driver string, completed time.Time) dispatch.LedgerEntry {
	return dispatch.LedgerEntry{
		RideID: ride, DriverID: driver, RiderID: "u-1", Region: "seoul",
		RequestedAt: completed.Add(-30 * time.Minute), StartedAt: completed.Add(-20 * time.Minute), CompletedAt: completed,
		DistanceM: 8200, Fare: dispatch.Money{Amount: 14300, Currency: "KRW"}, RecordedAt: completed,
	}
}

func collect(tb testing.TB, l *natslog.Ledger, since time.Time, driver string) []dispatch.LedgerEntry {
	tb.Helper()
	var got []dispatch.LedgerEntry
	if err := l.Entries(context.Background(), since, driver, func(e dispatch.LedgerEntry) error {
		got = append(got, e)
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
	return got
}

func TestLedgerRecordsEachTripOnce(t *testing.T) {
	ctx := context.Background()
	l, stop := mustOpenLedger(t, t.TempDir())
	defer stop()

	first, err := l.Record(ctx, entry("r_1", "d-1", t0))
	if err != nil || first.Seq == 0 {
		t.Fatalf("Record = %+v, %v", first, err)
	}
	// A retry, even with a later RecordedAt, answers the stored entry.
	retry := entry("r_1", "d-1", t0)
	retry.RecordedAt = t0.Add(time.Hour)
	again, err := l.Record(ctx, retry)
	if err != nil || again.Seq != first.Seq || !again.RecordedAt.Equal(first.RecordedAt) {
		t.Fatalf("retry = %+v, %v; want the first entry %+v", again, err, first)
	}
	// Many replicas completing the same trip at once: still one entry.
	var wg sync.WaitGroup
	seqs := make(chan uint64, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e, err := l.Record(ctx, entry("r_2", "d-2", t0.Add(time.Minute)))
			if err != nil {
				t.Error(err)
				return
			}
			seqs <- e.Seq
		}()
	}
	wg.Wait()
	close(seqs)
	var seq uint64
	for s := range seqs {
		if seq != 0 && s != seq {
			t.Fatalf("concurrent records got sequences %d and %d", seq, s)
		}
		seq = s
	}
	if got := collect(t, l, time.Time{}, ""); len(got) != 2 {
		t.Fatalf("ledger has %d entries, want 2: %+v", len(got), got)
	}
	if _, err := l.Record(ctx, dispatch.LedgerEntry{RideID: "r_3"}); err == nil {
		t.Fatal("an entry without a driver was recorded")
	}
}

func TestLedgerEntriesFilterAndOrder(t *testing.T) {
	ctx := context.Background()
	l, stop := mustOpenLedger(t, t.TempDir())
	defer stop()
	// Awkward ids must not break subjects.
	drivers := []string{"d-1", "d.2*>", "운전자"}
	for i := range 9 {
		if _, err := l.Record(ctx, entry(fmt.Sprintf("r_%d", i), drivers[i%3], t0.Add(time.Duration(i)*time.Minute))); err != nil {
			t.Fatal(err)
		}
	}
	all := collect(t, l, time.Time{}, "")
	if len(all) != 9 {
		t.Fatalf("%d entries, want 9", len(all))
	}
	for i := 1; i < len(all); i++ {
		if all[i].Seq <= all[i-1].Seq {
			t.Fatalf("entries out of order: %d after %d", all[i].Seq, all[i-1].Seq)
		}
	}
	for _, d := range drivers {
		got := collect(t, l, time.Time{}, d)
		if len(got) != 3 {
			t.Fatalf("driver %q: %d entries, want 3", d, len(got))
		}
		for _, e := range got {
			if e.DriverID != d {
				t.Fatalf("driver %q got %+v", d, e)
			}
		}
	}
	// since keeps trips completed at or after it. All were published just now, after
	// t0, so the time filter is on completion, not on publication.
	if got := collect(t, l, t0.Add(6*time.Minute), ""); len(got) != 3 || got[0].RideID != "r_6" {
		t.Fatalf("since +6m: %+v", got)
	}
	if got := collect(t, l, time.Time{}, "nobody"); len(got) != 0 {
		t.Fatalf("unknown driver: %+v", got)
	}
}

func TestLedgerSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l, stop := mustOpenLedger(t, dir)
	if _, err := l.Record(ctx, entry("r_1", "d-1", t0)); err != nil {
		t.Fatal(err)
	}
	stop()
	l, stop = mustOpenLedger(t, dir)
	defer stop()
	got := collect(t, l, time.Time{}, "")
	if len(got) != 1 || got[0].RideID != "r_1" || got[0].Fare.Amount != 14300 {
		t.Fatalf("after restart: %+v", got)
	}
	// And it still refuses a second entry for the trip.
	if e, err := l.Record(ctx, entry("r_1", "d-1", t0)); err != nil || e.Seq != got[0].Seq {
		t.Fatalf("record after restart = %+v, %v", e, err)
	}
}

// Reads come in batches of a few hundred entries; a read spanning many batches gets
// every entry once, in order, and leaves no consumer on the stream.
func TestLedgerEntriesSpanBatches(t *testing.T) {
	ctx := context.Background()
	nc, closeNATS := mustConnect(t, t.TempDir())
	defer closeNATS()
	l, err := natslog.OpenLedger(ctx, nc, 1)
	if err != nil {
		t.Fatal(err)
	}
	const n = 700
	for i := range n {
		if _, err := l.Record(ctx, entry(fmt.Sprintf("r_%d", i), []string{"d-1", "d-2"}[i%2], t0.Add(time.Duration(i)*time.Second))); err != nil {
			t.Fatal(err)
		}
	}
	all := collect(t, l, time.Time{}, "")
	if len(all) != n {
		t.Fatalf("%d entries, want %d", len(all), n)
	}
	for i, e := range all {
		if e.RideID != fmt.Sprintf("r_%d", i) || (i > 0 && e.Seq <= all[i-1].Seq) {
			t.Fatalf("entry %d is %s (seq %d)", i, e.RideID, e.Seq)
		}
	}
	if got := collect(t, l, time.Time{}, "d-2"); len(got) != n/2 || got[n/2-1].RideID != fmt.Sprintf("r_%d", n-1) {
		t.Fatalf("d-2: %d entries, want %d", len(got), n/2)
	}
	if got := collect(t, l, t0.Add((n-300)*time.Second), "d-1"); len(got) != 150 {
		t.Fatalf("d-1 since: %d entries, want 150", len(got))
	}
	// A reader that stops early (its client hung up) leaves nothing either.
	stop := fmt.Errorf("enough")
	if err := l.Entries(ctx, time.Time{}, "", func(dispatch.LedgerEntry) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("stopped read: %v", err)
	}
	js, _ := jetstream.New(nc)
	st, err := js.Stream(ctx, natslog.LedgerStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil || info.State.Consumers != 0 || !info.Config.AllowDirect {
		t.Fatalf("after the reads: consumers %d, allow direct %v, %v", info.State.Consumers, info.Config.AllowDirect, err)
	}
}

// Entry finds one ride's entry; an entry recorded without a kind is a trip.
func TestLedgerEntryLookup(t *testing.T) {
	ctx := context.Background()
	l, stop := mustOpenLedger(t, t.TempDir())
	defer stop()
	if _, err := l.Entry(ctx, "d-1", "r_1"); !errors.Is(err, dispatch.ErrNoLedgerEntry) {
		t.Fatalf("entry of an unpaid ride: %v, want ErrNoLedgerEntry", err)
	}
	trip := entry("r_1", "d-1", t0)
	trip.Kind = ""
	if _, err := l.Record(ctx, trip); err != nil {
		t.Fatal(err)
	}
	fee := dispatch.LedgerEntry{Kind: dispatch.EntryCancellationFee, RideID: "r_2", DriverID: "d-1", CompletedAt: t0,
		Fare: dispatch.Money{Amount: 3000, Currency: "KRW"}}
	if _, err := l.Record(ctx, fee); err != nil {
		t.Fatal(err)
	}
	if e, err := l.Entry(ctx, "d-1", "r_1"); err != nil || e.Kind != dispatch.EntryTrip || e.Seq == 0 {
		t.Fatalf("trip entry = %+v, %v", e, err)
	}
	if e, err := l.Entry(ctx, "d-1", "r_2"); err != nil || e.Kind != dispatch.EntryCancellationFee || e.Fare.Amount != 3000 {
		t.Fatalf("fee entry = %+v, %v", e, err)
	}
	if got := collect(t, l, time.Time{}, "d-1"); len(got) != 2 || got[0].Kind != dispatch.EntryTrip || got[1].Kind != dispatch.EntryCancellationFee {
		t.Fatalf("entries = %+v", got)
	}
}

// TestLedgerRetryReadsPastALaggingReplica: a retried complete finds its trip's entry
// recorded by the first try and reads it back; a replica that has not applied the
// entry yet answers that read with nothing, and the ledger reads again rather than
// fail the complete (which the driver would have to send once more).
func TestLedgerRetryReadsPastALaggingReplica(t *testing.T) {
	l, stop := mustOpenLedger(t, t.TempDir())
	defer stop()
	ctx := context.Background()
	first, err := l.Record(ctx, entry("r_1", "d-1", t0))
	if err != nil {
		t.Fatal(err)
	}
	natslog.StaleLedgerReads(l, 3)
	again, err := l.Record(ctx, entry("r_1", "d-1", t0.Add(time.Minute)))
	if err != nil || again.Seq != first.Seq || !again.CompletedAt.Equal(t0) {
		t.Fatalf("retried record over a lagging replica: %+v, %v; want the first entry (seq %d)", again, err, first.Seq)
	}
}
