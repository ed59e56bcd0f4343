package sim

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/rider"
	riderclient "github.com/understudy/understudy/rider/client"
)

func msSince(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }

// ride is one rider's ride: request it (with an idempotency key), follow its events
// to a final status, and cancel it when the scenario's share says so.
func (s *Sim) ride(c *riderclient.Client, seed uint64) {
	ctx := s.rideCtx
	sc := s.cfg.Scenario
	r := rand.New(rand.NewPCG(seed, 11))
	req := s.rideRequest(r)
	sent := time.Now()
	v, err := c.RequestRide(ctx, req, riderclient.NewKey())
	if err != nil {
		if ctx.Err() == nil {
			s.m.rate("errors").add(true)
			s.note("request ride: %v", err)
		}
		return
	}
	s.m.rate("errors").add(false)
	s.m.trend("request_to_created").add(msSince(sent))
	s.m.add("rides_requested", 1)
	s.trips.Add(1)
	defer s.trips.Add(-1)
	rec := s.register(v.ID, sent, c)

	var cancelC <-chan time.Time
	if r.Float64() < sc.CancelShare {
		t := time.NewTimer(time.Duration(r.Float64() * (sc.PickupS[1] + 1) * float64(time.Second)))
		defer t.Stop()
		cancelC = t.C
	}
	// Follow the event stream; when it cannot be opened or breaks for good, poll
	// GET /v1/rides/{id} once a second instead, as the k6 riders do.
	var (
		events <-chan rider.Ride
		poll   <-chan time.Time
	)
	st, err := c.Follow(ctx, v.ID, 0)
	s.m.rate("errors").add(err != nil && ctx.Err() == nil)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		s.note("follow ride %s: %v", v.ID, err)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		poll = tick.C
	} else {
		events = st.C
	}
	for {
		select {
		case <-ctx.Done():
			return // checkFinal reads it at the end
		case got, ok := <-events:
			if !ok {
				events = nil
				if err := st.Err(); err != nil && ctx.Err() == nil {
					s.m.rate("errors").add(true)
					s.note("follow ride %s: %v", v.ID, err)
				}
				if s.isFinal(rec) {
					return
				}
				tick := time.NewTicker(time.Second)
				defer tick.Stop()
				poll = tick.C
				continue
			}
			s.observe(rec, got)
		case <-poll:
			got, err := c.Ride(ctx, v.ID)
			if err != nil {
				if ctx.Err() == nil {
					s.m.rate("errors").add(true)
					s.note("read ride %s: %v", v.ID, err)
				}
				continue
			}
			s.m.rate("errors").add(false)
			s.observe(rec, got)
			if s.isFinal(rec) {
				return
			}
		case <-cancelC:
			cancelC = nil
			_, err := c.Cancel(ctx, v.ID)
			var e *riderclient.Error
			// A cancel that lost the race with the trip's start (or its end) is
			// refused with 409: expected, not an error.
			bad := err != nil && !(asError(err, &e) && e.StatusCode == http.StatusConflict) && ctx.Err() == nil
			s.m.rate("errors").add(bad)
			if bad {
				s.note("cancel ride %s: %v", v.ID, err)
			}
		}
	}
}

func (s *Sim) isFinal(rec *rideRec) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return rec.final != ""
}

// register records a new ride, and the offer that reached a driver before the 201.
func (s *Sim) register(id string, sent time.Time, c *riderclient.Client) *rideRec {
	rec := &rideRec{sent: sent, rider: c}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.rides[id]; dup {
		s.problemLocked("double_assignments", "ride id %s created twice", id)
	}
	s.rides[id] = rec
	if at, ok := s.early[id]; ok {
		delete(s.early, id)
		rec.offered = true
		s.m.trend("request_to_offer").add(float64(at.Sub(sent).Microseconds()) / 1000)
	}
	return rec
}

// offered records the first offer of ride id, seen on a driver's socket at at.
func (s *Sim) offered(id string, at time.Time) {
	s.m.add("offers", 1)
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.rides[id]
	switch {
	case !ok:
		if len(s.early) < 100_000 {
			s.early[id] = at
		}
	case !rec.offered:
		rec.offered = true
		s.m.trend("request_to_offer").add(float64(at.Sub(rec.sent).Microseconds()) / 1000)
	}
}

// observe takes one state of a ride as its rider sees it.
func (s *Sim) observe(rec *rideRec, v rider.Ride) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rec.final != "" {
		return
	}
	if v.Driver != nil {
		switch {
		case rec.driver == "":
			rec.driver = v.Driver.ID
			s.m.trend("request_to_matched").add(msSince(rec.sent))
		case rec.driver != v.Driver.ID:
			s.problemLocked("double_assignments", "ride %s: rider saw driver %s, then %s", v.ID, rec.driver, v.Driver.ID)
			rec.driver = v.Driver.ID
		}
	}
	if !v.Status.Final() {
		return
	}
	rec.final, rec.ended = v.Status, v.UpdatedAt
	switch v.Status {
	case dispatch.RideCompleted:
		s.m.add("rides_completed", 1)
	case dispatch.RideCancelled:
		s.m.add("rides_cancelled", 1)
	case dispatch.RideNoDriver:
		s.m.add("rides_no_driver", 1)
	}
	switch {
	case rec.driver != "":
		s.m.rate("match_rate").add(true)
	case v.Status == dispatch.RideNoDriver:
		s.m.rate("match_rate").add(false)
	}
}

// checkFinal reads every ride still without a final status once more; those still
// not final are lost.
func (s *Sim) checkFinal(ctx context.Context) []string {
	s.mu.Lock()
	var open []string
	for id, rec := range s.rides {
		if rec.final == "" {
			open = append(open, id)
		}
	}
	n := len(s.rides)
	s.mu.Unlock()
	for _, id := range open {
		s.mu.Lock()
		rec := s.rides[id]
		s.mu.Unlock()
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		v, err := rec.rider.Ride(rctx, id)
		cancel()
		if err == nil {
			s.observe(rec, v)
		}
		s.mu.Lock()
		lost := rec.final == ""
		s.mu.Unlock()
		if lost {
			st := "unread: " + errString(err)
			if err == nil {
				st = string(v.Status)
			}
			s.m.rate("match_rate").add(false)
			s.problem("lost_rides", "ride %s not final after the drain (%s)", id, st)
		}
	}
	stale := s.checkSuspects()
	return []string{"every ride final: " + plural(n, "ride") + " checked, " + plural(len(open), "read again") + " after the drain",
		"drivers assigned while the simulator held them on an ended ride (their app had not heard of its end): " + strconv.Itoa(stale)}
}

// checkSuspects reports each suspect whose earlier ride had not ended by the time
// the driver was assigned the next one, and returns how many had (a stale view).
func (s *Sim) checkSuspects() (stale int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range s.suspects {
		if rec, ok := s.rides[x.on]; ok && rec.final != "" && !rec.ended.After(x.at) {
			stale++
			continue
		}
		s.problemLocked("double_assignments", "driver %s assigned ride %s while on ride %s", x.driver, x.assigned, x.on)
	}
	return stale
}
