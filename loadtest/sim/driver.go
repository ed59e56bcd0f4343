package sim

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/driver"
	"github.com/understudy/understudy/driver/client"
)

// wanderSpeed is how fast an idle driver cruises between waypoints, m/s.
const wanderSpeed = 9.0

// simDriver is one driver app: it cruises around its home hub, streams its
// position, answers offers as the scenario's shares say, drives each trip through
// arrived, start and complete, and now and then drops its socket and resumes.
type simDriver struct {
	s    *Sim
	id   string
	r    *rand.Rand
	home dispatch.Point
	// The current leg: from from to to, over legStart to legStart+legDur.
	from, to dispatch.Point
	legStart time.Time
	legDur   time.Duration
	trip     *trip
	welcomes int
}

// trip is the driver's assigned ride and the next step it owes.
type trip struct {
	ride             string
	rank             int    // statusRank of the ride's last known status
	next             string // driver.TypeArrived, TypeStart or TypeComplete
	pickup, dropoff  dispatch.Point
	pickupS, tripDur time.Duration
}

func (s *Sim) newDriver(i int) *simDriver {
	r := rand.New(rand.NewPCG(s.cfg.Seed, uint64(i)+1000))
	hub := hubPoint(s.city.Hubs[i%len(s.city.Hubs)])
	home := near(r, hub, s.city.RadiusM)
	return &simDriver{s: s, id: fmt.Sprintf("%s-d%d", s.cfg.RunID, i), r: r, home: home,
		from: home, to: home, legStart: time.Now()}
}

// leg starts a leg from the current position to to, lasting dur (0: at cruising
// speed).
func (d *simDriver) leg(to dispatch.Point, now time.Time, dur time.Duration) {
	d.from = d.at(now)
	d.to, d.legStart = to, now
	if dur <= 0 {
		dur = time.Duration(dispatch.DistanceM(d.from, to)/wanderSpeed*float64(time.Second)) + time.Second
	}
	d.legDur = dur
}

// at is where the driver is at now along its leg.
func (d *simDriver) at(now time.Time) dispatch.Point {
	if d.legDur <= 0 {
		return d.to
	}
	return toward(d.from, d.to, float64(now.Sub(d.legStart))/float64(d.legDur))
}

func (d *simDriver) run(ctx context.Context) {
	s, sc := d.s, d.s.cfg.Scenario
	tok, err := s.cfg.Tokens(dispatch.RoleDriver, d.id)
	if err != nil {
		s.m.rate("errors").add(true)
		s.note("driver token: %v", err)
		return
	}
	var up atomic.Bool
	dialer := client.Dialer{Reconnect: true, Regions: s.cfg.Regions, MaxBackoff: 5 * time.Second, Buffer: 32,
		OnDisconnect: func(error) {
			if up.Swap(false) {
				s.connected.Add(-1)
			}
		}}
	var c *client.Client
	for attempt := 0; ; attempt++ {
		c, err = dialer.Dial(ctx, s.ws, tok)
		if ctx.Err() != nil {
			return
		}
		s.m.rate("errors").add(err != nil)
		if err == nil {
			break
		}
		var he *client.HandshakeError
		if attempt >= 4 || (errors.As(err, &he) && he.Status < 500 && he.Status != 429) {
			s.note("driver %s: dial: %v", d.id, err)
			return
		}
		if sleep(ctx, dialer.Backoff(attempt+2)) != nil {
			return
		}
	}
	defer func() {
		_ = c.Close()
		if up.Swap(false) {
			s.connected.Add(-1)
		}
	}()

	every := time.Duration(sc.LocationIntervalS * float64(time.Second))
	loc := time.NewTimer(time.Duration(d.r.Int64N(int64(every)))) // spread the fleet's phases
	defer loc.Stop()
	step := time.NewTimer(time.Hour)
	step.Stop()
	defer step.Stop()
	var dropC <-chan time.Time
	if sc.DropPerMin > 0 {
		dropC = time.After(d.dropAfter())
	}
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-loc.C:
			loc.Reset(every)
			if d.trip == nil && !now.Before(d.legStart.Add(d.legDur)) {
				d.leg(near(d.r, d.home, s.city.RadiusM/2), now, 0) // cruise on
			}
			p := d.at(now)
			h := heading(d.from, d.to)
			if err := c.Send(ctx, driver.Frame{Type: driver.TypeLocation, Lat: &p.Lat, Lng: &p.Lng, Heading: &h}); err == nil {
				s.m.add("location_updates", 1)
			}
		case <-dropC:
			c.Drop() // as a lost network would; the client redials and resumes
			dropC = time.After(d.dropAfter())
		case <-step.C:
			d.step(ctx, c, step)
		case m, ok := <-c.Frames():
			if !ok {
				if err := c.Err(); ctx.Err() == nil && !errors.Is(err, client.ErrClosed) {
					s.m.rate("errors").add(true)
					s.note("driver %s stopped: %v", d.id, err)
				}
				return
			}
			if m.Type == driver.TypeWelcome && !up.Swap(true) {
				s.connected.Add(1)
			}
			d.frame(ctx, c, m, step)
		}
	}
}

// dropAfter is the wait until the next socket drop: exponential, drop_per_min a
// minute on average.
func (d *simDriver) dropAfter() time.Duration {
	return time.Duration(d.r.ExpFloat64() / d.s.cfg.Scenario.DropPerMin * float64(time.Minute))
}

// send sends a frame other than a location and counts it in the errors rate's
// denominator.
func (d *simDriver) send(ctx context.Context, c *client.Client, f driver.Frame) error {
	err := c.Send(ctx, f)
	if err == nil {
		d.s.m.rate("errors").add(false)
	}
	return err
}

func (d *simDriver) frame(ctx context.Context, c *client.Client, m driver.Message, step *time.Timer) {
	s, sc := d.s, d.s.cfg.Scenario
	now := time.Now()
	switch m.Type {
	case driver.TypeWelcome:
		if d.welcomes++; d.welcomes > 1 {
			s.m.add("reconnects", 1)
		}
		p := d.at(now)
		if err := c.Location(ctx, p); err != nil {
			return
		}
		s.m.add("location_updates", 1)
		switch {
		case m.Ride != nil:
			d.resume(*m.Ride, now, step)
		case d.trip != nil:
			d.trip = nil // the ride ended while the driver was away (a cancel)
			step.Stop()
		}
		if m.State == dispatch.DriverOffline {
			_ = d.send(ctx, c, driver.Frame{Type: driver.TypeAvailable})
		}
	case driver.TypeOffer:
		s.offered(m.RideID, now)
		switch x := d.r.Float64(); {
		case x < sc.DeclineShare:
			_ = d.send(ctx, c, driver.Frame{Type: driver.TypeDecline, OfferID: m.OfferID})
		case x < sc.DeclineShare+sc.IgnoreShare:
			// let it expire
		default:
			_ = d.send(ctx, c, driver.Frame{Type: driver.TypeAccept, OfferID: m.OfferID})
		}
	case driver.TypeAssigned:
		if m.Ride == nil {
			return
		}
		s.assign(d.id, m.Ride.ID)
		if d.trip != nil && d.trip.ride != m.Ride.ID {
			s.mu.Lock()
			s.suspects = append(s.suspects, suspect{driver: d.id, on: d.trip.ride, assigned: m.Ride.ID, at: m.Ride.UpdatedAt})
			s.mu.Unlock()
		}
		if d.trip != nil && d.trip.ride == m.Ride.ID {
			d.advance(*m.Ride, now, step) // a welcome resumed it already
			return
		}
		d.start(*m.Ride, now, step)
	case driver.TypeRide:
		if m.Ride != nil {
			d.advance(*m.Ride, now, step)
		}
	case driver.TypeRideCancelled:
		if d.trip != nil && d.trip.ride == m.RideID {
			d.trip = nil
			step.Stop()
			d.leg(near(d.r, d.home, s.city.RadiusM/2), now, 0)
		}
	case driver.TypeState:
		// Taken offline for letting offers expire: come back.
		_ = d.send(ctx, c, driver.Frame{Type: driver.TypeAvailable})
	case driver.TypeError:
		// conflict: an answer to an offer that expired or went to another driver, or
		// a trip step racing the rider's cancel. Expected when the driver (or the
		// generator) is slow; anything else is an error.
		if m.Code != dispatch.ECodeConflict {
			s.m.rate("errors").add(true)
			s.note("driver %s: error frame %s: %s", d.id, m.Code, m.Message)
		}
	}
}

// statusRank orders a trip's statuses, so a late or repeated answer never moves it back.
var statusRank = map[dispatch.RideStatus]int{dispatch.RideMatched: 1, dispatch.RideArrived: 2, dispatch.RideInProgress: 3,
	dispatch.RideCompleted: 4, dispatch.RideCancelled: 4, dispatch.RideNoDriver: 4}

// stepRetry is how long the driver waits for the ride frame that answers a trip step
// before it sends the step again (a repeated step answers the same ride), so a frame
// lost with a dropped socket cannot leave a trip unfinished.
const stepRetry = 5 * time.Second

// start begins the trip of a newly assigned (or resumed) ride.
func (d *simDriver) start(r driver.Ride, now time.Time, step *time.Timer) {
	sc := d.s.cfg.Scenario
	d.trip = &trip{ride: r.ID, pickup: r.Pickup, dropoff: r.Dropoff,
		pickupS: seconds(between(d.r, sc.PickupS)), tripDur: seconds(between(d.r, sc.TripS))}
	d.advance(r, now, step)
}

// advance moves the trip to ride r's status (as a welcome, an assigned or a ride
// frame says) and schedules the step it owes next.
func (d *simDriver) advance(r driver.Ride, now time.Time, step *time.Timer) {
	t := d.trip
	if t == nil || t.ride != r.ID || statusRank[r.Status] <= t.rank {
		return
	}
	t.rank = statusRank[r.Status]
	switch r.Status {
	case dispatch.RideMatched:
		t.next = driver.TypeArrived
		d.leg(t.pickup, now, t.pickupS)
		step.Reset(t.pickupS)
	case dispatch.RideArrived:
		t.next = driver.TypeStart
		d.leg(t.pickup, now, time.Second)
		step.Reset(time.Second)
	case dispatch.RideInProgress:
		t.next = driver.TypeComplete
		d.leg(t.dropoff, now, t.tripDur)
		step.Reset(t.tripDur)
	default: // completed, or cancelled: available again
		d.trip = nil
		step.Stop()
		d.leg(near(d.r, d.home, d.s.city.RadiusM/2), now, 0)
	}
}

// resume picks the trip up again from the ride a welcome carries.
func (d *simDriver) resume(r driver.Ride, now time.Time, step *time.Timer) {
	if d.trip != nil && d.trip.ride == r.ID {
		if statusRank[r.Status] == d.trip.rank {
			step.Reset(time.Second) // the step the drop may have cut off, again
		}
		d.advance(r, now, step)
		return
	}
	d.start(r, now, step)
}

// step sends the trip's next step, and again after stepRetry until a ride frame
// answers it.
func (d *simDriver) step(ctx context.Context, c *client.Client, step *time.Timer) {
	t := d.trip
	if t == nil {
		return
	}
	if err := d.send(ctx, c, driver.Frame{Type: t.next, RideID: t.ride}); err != nil {
		step.Reset(time.Second) // not connected: try again (the welcome may resume it first)
		return
	}
	step.Reset(stepRetry)
}

func seconds(s float64) time.Duration { return time.Duration(math.Max(s, 0) * float64(time.Second)) }
