package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
	"github.com/understudy/understudy/driver"
	"github.com/understudy/understudy/driver/client"
	"github.com/understudy/understudy/driver/drivertest"
)

// TestDriverHearsRideEventsInOrder races every offer's accept (from the driver's
// socket) against the rider's cancel (from another goroutine) on many drivers at once,
// with more rides waiting than drivers, so a driver the cancel frees is offered the
// next ride at once. Every driver must hear each ride's frames in the order they were
// committed (offer, then assigned, then ride_cancelled; or offer, then offer_revoked),
// and no offer for a new ride before the end of its previous one.
func TestDriverHearsRideEventsInOrder(t *testing.T) {
	s := mustServe(t, "--match-interval", "0", "--max-missed-offers", "0")
	raceRideEvents(t, []*server{s}, []*server{s}, 16, 320)
}

// TestReplicasDriverHearsRideEventsInOrder is the same race across two replicas: the
// drivers are on A, the rides are requested and cancelled on B, so ride_cancelled comes
// over the bus while assigned comes from A's own commit.
func TestReplicasDriverHearsRideEventsInOrder(t *testing.T) {
	rs := mustStartReplicas(t, 2, "--max-missed-offers", "0")
	a, b := rs.servers[0], rs.servers[1]
	raceRideEvents(t, []*server{a}, []*server{b}, 16, 320)
}

// spot is driver i's part of town.
func spot(i int) dispatch.Point { return dispatch.Point{Lat: near.Lat + float64(i)*0.1, Lng: near.Lng} }

// raceRideEvents connects drivers to the servers in sockets (round robin), requests
// rides on the servers in rides, and cancels each ride as its offer reaches a driver,
// while the driver accepts it.
func raceRideEvents(t *testing.T, sockets, rides []*server, drivers, total int) {
	home := rides[0]
	type heard struct {
		typ, ride, offer string
		status           dispatch.RideStatus
	}
	var (
		mu       sync.Mutex
		log      = make(map[string][]heard)
		offerOf  = make(map[string]string) // offer id → ride id
		cancels  sync.WaitGroup
		clients  []*client.Client
		readers  sync.WaitGroup
		stopRead = make(chan struct{})
	)
	for i := range drivers {
		id := fmt.Sprintf("d-%d", i)
		s := sockets[i%len(sockets)]
		c, _ := mustDial(t, s, id, client.Dialer{})
		p := spot(i)
		send(t, c.Location(ctx(t), p))
		send(t, c.Available(ctx(t)))
		drivertest.Next(t, c, driver.TypeAck)
		clients = append(clients, c)
	}
	for _, s := range rides {
		dispatchtest.Eventually(t, func() error {
			if n := s.engine.Available(); n != drivers {
				return fmt.Errorf("%d of %d drivers in supply", n, drivers)
			}
			return nil
		})
	}
	for i, c := range clients {
		id := fmt.Sprintf("d-%d", i)
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				var m driver.Message
				select {
				case m = <-c.Frames():
				case <-stopRead:
					return
				}
				h := heard{typ: m.Type, ride: m.RideID, offer: m.OfferID}
				if m.Ride != nil {
					h.ride, h.status = m.Ride.ID, m.Ride.Status
				}
				mu.Lock()
				if m.Type == driver.TypeOfferRevoked {
					h.ride = offerOf[m.OfferID]
				}
				if m.Type == driver.TypeOffer {
					offerOf[m.OfferID] = m.RideID
				}
				log[id] = append(log[id], h)
				mu.Unlock()
				if m.Type != driver.TypeOffer {
					continue
				}
				// Race the accept against the rider's cancel, either one first.
				cancels.Add(1)
				cancel := func() {
					defer cancels.Done()
					if _, err := home.engine.Riders().CancelRide(context.Background(), m.RideID); err != nil {
						t.Errorf("cancel %s: %v", m.RideID, err)
					}
				}
				if rand.IntN(2) == 0 {
					go cancel()
					_ = c.Accept(context.Background(), m.OfferID)
				} else {
					_ = c.Accept(context.Background(), m.OfferID)
					go cancel()
				}
			}
		}()
	}
	// Each driver has its own part of town, 11 km from the next, with its share of the
	// rides waiting: a driver a cancel frees has its next ride waiting.
	ids := make([]string, 0, total)
	for i := range total {
		r, err := rides[i%len(rides)].engine.Riders().RequestRide(context.Background(), fmt.Sprintf("u-%d", i), spot(i%drivers), dropoff)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID)
	}
	dispatchtest.Eventually(t, func() error {
		left := 0
		for _, id := range ids {
			r, err := home.engine.Riders().Ride(context.Background(), id)
			if err != nil {
				return err
			}
			if !r.Status.Final() {
				left++
			}
		}
		if left > 0 {
			return fmt.Errorf("%d of %d rides not final", left, total)
		}
		return nil
	})
	cancels.Wait()
	// Every cancel has returned, so its frames are queued: a ref'd location is
	// answered after them.
	for i, c := range clients {
		p := spot(i)
		if err := c.Send(ctx(t), driver.Frame{Type: driver.TypeLocation, Lat: &p.Lat, Lng: &p.Lng, Ref: "sync"}); err != nil {
			t.Fatalf("d-%d: sync: %v (socket ended: %v)", i, err, c.Err())
		}
	}
	dispatchtest.Eventually(t, func() error {
		mu.Lock()
		defer mu.Unlock()
		for i := range clients {
			id := fmt.Sprintf("d-%d", i)
			l := log[id]
			if len(l) == 0 || l[len(l)-1].typ != driver.TypeAck {
				return fmt.Errorf("%s has not heard the sync ack", id)
			}
		}
		return nil
	})
	close(stopRead)
	readers.Wait()

	// Replay what each driver heard against the ride's life: offer, then assigned or
	// offer_revoked, and after assigned, ride_cancelled.
	mu.Lock()
	defer mu.Unlock()
	var bad []string
	offers := 0
	for i := range clients {
		id := fmt.Sprintf("d-%d", i)
		var cur, state string
		for k, h := range log[id] {
			fail := func(format string, args ...any) {
				bad = append(bad, fmt.Sprintf("%s frame %d: %s", id, k, fmt.Sprintf(format, args...)))
			}
			switch h.typ {
			case driver.TypeOffer:
				offers++
				if cur != "" {
					fail("offer of %s before the end of %s (%s)", h.ride, cur, state)
				}
				cur, state = h.ride, "offered"
			case driver.TypeAssigned:
				if h.ride != cur || state != "offered" || h.status != dispatch.RideMatched {
					fail("assigned %s (%s) while at %q (%s)", h.ride, h.status, cur, state)
				}
				state = "assigned"
			case driver.TypeOfferRevoked:
				if h.ride != cur || state != "offered" {
					fail("offer_revoked of %s while at %q (%s)", h.ride, cur, state)
				}
				cur, state = "", ""
			case driver.TypeRideCancelled:
				if h.ride != cur || h.status != dispatch.RideCancelled || state != "assigned" {
					fail("ride_cancelled %s (%s) while at %q (%s)", h.ride, h.status, cur, state)
				}
				cur, state = "", ""
			}
		}
		if cur != "" {
			bad = append(bad, fmt.Sprintf("%s: %s still %s at the end", id, cur, state))
		}
	}
	if len(bad) > 0 {
		if len(bad) > 20 {
			bad = append(bad[:20], fmt.Sprintf("... and %d more", len(bad)-20))
		}
		t.Fatalf("drivers heard rides out of order:\n%s", strings.Join(bad, "\n"))
	}
	t.Logf("%d rides, %d offers, all heard in order", total, offers)
}
