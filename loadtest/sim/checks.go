package sim

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/understudy/understudy/dispatch"
)

// assign records that driver was assigned ride; a ride assigned to a second driver is
// a double assignment.
func (s *Sim) assign(driver, ride string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if prev, ok := s.assigned[ride]; ok && prev != driver {
		s.problemLocked("double_assignments", "ride %s assigned to %s, then to %s", ride, prev, driver)
	}
	s.assigned[ride] = driver
}

// checkLedger reads the ledger (GET /v1/admin/ledger since the run began) and checks
// that every ride of the run that completed has exactly one trip entry, and that no
// other ride of the run has one.
func (s *Sim) checkLedger(ctx context.Context, admin string, start time.Time) []string {
	if admin == "" {
		return []string{"ledger: NOT checked (no admin token: pass --admin-token, or let the simulator mint tokens)"}
	}
	// The ledger's entries are written before the driver's complete is answered, so
	// a ride the rider saw completed is in it already.
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	since := start.Add(-time.Minute).UTC().Format(time.RFC3339)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.cfg.URL+"/v1/admin/ledger?since="+url.QueryEscape(since), nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	resp, err := s.hc.Do(req)
	if err != nil {
		s.problem("ledger_mismatches", "read the ledger: %v", err)
		return []string{"ledger: unreadable"}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		s.problem("ledger_mismatches", "read the ledger: %d %s", resp.StatusCode, b)
		return []string{"ledger: unreadable"}
	}
	trips := map[string]int{}
	entries := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var e dispatch.LedgerEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			s.problem("ledger_mismatches", "ledger line %q: %v", clip(sc.Text()), err)
			continue
		}
		entries++
		if e.Kind == dispatch.EntryTrip || e.Kind == "" {
			trips[e.RideID]++
		}
	}
	if err := sc.Err(); err != nil {
		s.problem("ledger_mismatches", "read the ledger: %v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	completed := 0
	for id, rec := range s.rides {
		n := trips[id]
		switch {
		case rec.final == dispatch.RideCompleted && n != 1:
			s.problemLocked("ledger_mismatches", "completed ride %s has %d trip entries in the ledger", id, n)
		case rec.final != dispatch.RideCompleted && n != 0:
			s.problemLocked("ledger_mismatches", "ride %s ended %q but has %d trip entries", id, rec.final, n)
		}
		if rec.final == dispatch.RideCompleted {
			completed++
		}
	}
	return []string{fmt.Sprintf("ledger: %d completed rides of the run against %d entries since %s", completed, entries, since)}
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

func asError[T error](err error, target *T) bool { return errors.As(err, target) }

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func plural(n int, what string) string { return fmt.Sprintf("%d %s", n, what) }
