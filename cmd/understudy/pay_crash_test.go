package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/redisstore/redistest"
	"github.com/understudy/understudy/driver"
	"github.com/understudy/understudy/driver/client"
)

// TestPayAgreesWithRidesAcrossCrash has drivers complete and start trips while their
// riders cancel them, all at once, and kills the real binary with SIGKILL while that
// is under way. After the restart, before anyone retries, the ledger pays exactly the
// rides that are completed (a trip) or were cancelled after the driver arrived (a
// fee). Then the clients retry what got no answer, and every ride ends paid once.
func TestPayAgreesWithRidesAcrossCrash(t *testing.T) {
	for _, redis := range []bool{false, true} {
		t.Run(fmt.Sprintf("redis=%v", redis), func(t *testing.T) {
			w := &crashWorld{tb: t, dataDir: t.TempDir(), drivers: map[string]*client.Client{}}
			conf := filepath.Join(t.TempDir(), "understudy.json")
			if err := os.WriteFile(conf, []byte(`{"fare-cancellation-fee":2500}`), 0o600); err != nil {
				t.Fatal(err)
			}
			w.args = []string{"--addr", freeAddr(t), "--data-dir", w.dataDir, "--config", conf, "--match-interval", "0",
				"--offer-timeout", "1m", "--max-search", "1h", "--rider-rate", "1000", "--rider-burst", "1000"}
			if redis {
				w.args = append(w.args, "--redis", redistest.URL(t), "--region", "paycrash")
			}
			w.proc = startProc(t, w.args...)

			// Twelve rides, each with its own driver: even ones in progress, odd ones
			// with the driver arrived at the pickup.
			const n = 12
			gangnam := dispatch.Point{Lat: 37.4979, Lng: 127.0276}
			rides := make([]string, n)
			for i := range n {
				id := fmt.Sprintf("d-%d", i)
				w.online(id, offset(gangnam, float64(100*(i+1)), 0))
				rides[i] = w.request(gangnam)
				steps := []string{"accept", "arrived", "start"}
				if i%2 == 1 {
					steps = steps[:2]
				}
				w.trip(id, rides[i], steps...)
			}

			// All at once: every rider cancels; the drivers of trips in progress
			// complete them, and half of those who arrived start theirs. The process
			// is killed once half the riders have an answer.
			answered := make(chan struct{}, 2*n)
			var wg sync.WaitGroup
			cancelled := make([]int, n) // the HTTP status each rider got, 0 for none
			for i := range n {
				wg.Add(2)
				go func() {
					defer wg.Done()
					c, ctx := w.drivers[fmt.Sprintf("d-%d", i)], context.Background()
					switch i % 4 {
					case 0, 2:
						_ = c.Complete(ctx, rides[i])
					case 1:
						_ = c.Start(ctx, rides[i])
					}
				}()
				go func() {
					defer wg.Done()
					cancelled[i] = w.cancel(rides[i])
					answered <- struct{}{}
				}()
			}
			for range n / 2 {
				<-answered
			}
			w.proc.kill()
			wg.Wait()
			for i := 0; i < n; i += 2 {
				if cancelled[i] != 0 && cancelled[i] != 409 {
					t.Errorf("ride %s in progress: the rider's cancel answered %d, want 409", rides[i], cancelled[i])
				}
			}

			w.proc = startProc(t, w.args...)
			status := w.payAgrees(rides)
			t.Logf("after the restart: %v", status)

			// The clients retry what got no answer: drivers complete their trips,
			// riders cancel where the driver had only arrived.
			for i := range n {
				w.resync(fmt.Sprintf("d-%d", i))
			}
			for i, id := range rides {
				switch status[id] {
				case "in_progress":
					d := fmt.Sprintf("d-%d", i)
					if err := w.drivers[d].Complete(context.Background(), id); err != nil {
						t.Fatal(err)
					}
					if m := w.next(d, driver.TypeRide); m.Ride.Status != dispatch.RideCompleted {
						t.Fatalf("complete retried: %s", m.Raw)
					}
				case "arrived":
					if code := w.cancel(id); code != 200 {
						t.Fatalf("cancel retried: %d", code)
					}
				}
			}
			for id, s := range w.payAgrees(rides) {
				if s != "completed" && s != "cancelled" {
					t.Errorf("ride %s is %s after the retries", id, s)
				}
			}
		})
	}
}

// cancel asks for rider u-1's ride id to be cancelled and returns the HTTP status, 0
// when no answer came (the process died).
func (w *crashWorld) cancel(id string) int {
	req, _ := http.NewRequest("POST", "http://"+w.proc.addr+"/v1/rides/"+id+"/cancel", nil)
	req.Header.Set("Authorization", "Bearer "+w.token("u-1", dispatch.RoleRider))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// resync waits for driver id's client to be welcomed on the new process, skipping
// whatever the old one sent before it died (answers, refusals).
func (w *crashWorld) resync(id string) {
	w.tb.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case m, ok := <-w.drivers[id].Frames():
			if !ok {
				w.tb.Fatalf("driver %s: connection ended: %v", id, w.drivers[id].Err())
			}
			if m.Type == driver.TypeWelcome {
				return
			}
		case <-deadline:
			w.tb.Fatalf("driver %s: not welcomed back within 30 s", id)
		}
	}
}

// payAgrees checks that the ledger, as `ledger export` reads it, pays exactly the
// rides that are completed (one trip entry) or cancelled after the driver arrived
// (one fee), and returns each ride's status.
func (w *crashWorld) payAgrees(rides []string) map[string]string {
	w.tb.Helper()
	var out bytes.Buffer
	if err := run(context.Background(), []string{"ledger", "export", "--data-dir", w.dataDir}, &out, io.Discard); err != nil {
		w.tb.Fatal(err)
	}
	entries := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if line == "" {
			continue
		}
		var e dispatch.LedgerEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			w.tb.Fatalf("ledger line %q: %v", line, err)
		}
		entries[e.RideID] = append(entries[e.RideID], string(e.Kind))
	}
	status := map[string]string{}
	for _, id := range rides {
		s := w.status(id)
		status[id] = s
		want := map[string]string{"completed": "[trip]", "cancelled": "[cancellation_fee]"}[s]
		if want == "" {
			want = "[]"
		}
		if got := fmt.Sprint(entries[id]); got != want {
			w.tb.Errorf("ride %s is %s and the ledger has %s for it, want %s", id, s, got, want)
		}
	}
	return status
}
