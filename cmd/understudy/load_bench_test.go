package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
	"github.com/understudy/understudy/dispatch/redisstore/redistest"
	"github.com/understudy/understudy/driver"
	"github.com/understudy/understudy/driver/client"
)

// BenchmarkRequestToOffer measures the durable path end to end on a real server: a
// rider's POST /v1/rides (ride committed to the Store and appended to the JetStream log
// before the 201) until the offer frame reaches a driver's websocket, and the rate of
// requests one region sustains. Drivers accept every offer over the socket and the trip
// is completed through the engine (writing the ledger), so supply never runs out. Riders run closed loops: each waits for
// its ride's offer before requesting again.
//
//	go test ./cmd/understudy -run '^$' -bench RequestToOffer -benchtime 2000x
func BenchmarkRequestToOffer(b *testing.B) {
	for _, c := range []struct {
		name  string
		redis bool
	}{{"embedded", false}, {"redis", true}} {
		b.Run(c.name, func(b *testing.B) {
			args := []string{"--match-interval", "0", "--rider-rate", "1000000", "--rider-burst", "1000000"}
			if c.redis {
				args = append(args, "--redis", redistest.URL(b), "--region", "bench")
			}
			benchRequestToOffer(b, mustServe(b, args...), 1000, 16)
		})
	}
}

func benchRequestToOffer(b *testing.B, s *server, nDrivers, nRiders int) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu      sync.Mutex
		waiting = map[string]chan time.Time{} // ride → its rider, waiting for the offer
		early   = map[string]time.Time{}      // offers that arrived before the 201 was read
	)
	offered := func(rideID string, at time.Time) {
		mu.Lock()
		defer mu.Unlock()
		if ch, ok := waiting[rideID]; ok {
			ch <- at
			delete(waiting, rideID)
			return
		}
		early[rideID] = at
	}
	hub := dispatch.Point{Lat: 37.5665, Lng: 126.9780}
	r := rand.New(rand.NewPCG(3, 3))
	var wg sync.WaitGroup
	for i := range nDrivers {
		id := fmt.Sprintf("bd-%d", i)
		tok, _ := s.keys.Sign(dispatch.Identity{Subject: id, Role: dispatch.RoleDriver}, time.Hour)
		c, err := client.Dial(ctx, "ws://"+s.Addr()+driver.Path, tok)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		if err := c.Location(ctx, offset(hub, r.NormFloat64()*1500, r.NormFloat64()*1500)); err != nil {
			b.Fatal(err)
		}
		if err := c.Available(ctx); err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range c.Frames() {
				switch m.Type {
				case driver.TypeOffer:
					offered(m.RideID, time.Now())
					_ = c.Accept(ctx, m.OfferID)
				case driver.TypeAssigned:
					// The trip itself goes through the engine: over the socket, a
					// driver finishing trips every few hundred milliseconds would
					// (rightly) trip the gateway's frame limit.
					for _, step := range []func(context.Context, string, string) (dispatch.Ride, error){
						s.engine.Drivers().Arrived, s.engine.Drivers().Start, s.engine.Drivers().Complete} {
						if _, err := step(ctx, id, m.Ride.ID); err != nil && ctx.Err() == nil {
							b.Errorf("driver %s trip step: %v", id, err)
						}
					}
				}
			}
		}()
	}
	dispatchtest.Eventually(b, supplied(s.engine, nDrivers))

	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: nRiders}}
	defer hc.CloseIdleConnections()
	var (
		lat   []time.Duration
		latMu sync.Mutex
		next  = make(chan struct{}, b.N)
	)
	for range b.N {
		next <- struct{}{}
	}
	close(next)
	b.ResetTimer()
	start := time.Now()
	var riders sync.WaitGroup
	for i := range nRiders {
		tok, _ := s.keys.Sign(dispatch.Identity{Subject: fmt.Sprintf("bu-%d", i), Role: dispatch.RoleRider}, time.Hour)
		rr := rand.New(rand.NewPCG(uint64(i), 9))
		riders.Add(1)
		go func() {
			defer riders.Done()
			for range next {
				body, _ := json.Marshal(map[string]dispatch.Point{
					"pickup":  offset(hub, rr.NormFloat64()*1000, rr.NormFloat64()*1000),
					"dropoff": offset(hub, rr.NormFloat64()*3000, rr.NormFloat64()*3000),
				})
				req, _ := http.NewRequest("POST", "http://"+s.Addr()+"/v1/rides", bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+tok)
				req.Header.Set("Content-Type", "application/json")
				sent := time.Now()
				resp, err := hc.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				var ride struct{ ID string }
				err = json.NewDecoder(resp.Body).Decode(&ride)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 201 {
					b.Errorf("POST /v1/rides: %d %v", resp.StatusCode, err)
					return
				}
				ch := make(chan time.Time, 1)
				mu.Lock()
				if at, ok := early[ride.ID]; ok {
					ch <- at
					delete(early, ride.ID)
				} else {
					waiting[ride.ID] = ch
				}
				mu.Unlock()
				select {
				case at := <-ch:
					latMu.Lock()
					lat = append(lat, at.Sub(sent))
					latMu.Unlock()
				case <-time.After(10 * time.Second):
					b.Errorf("ride %s: no offer within 10 s", ride.ID)
					return
				}
			}
		}()
	}
	riders.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "rides/s")
	cancel()
}
