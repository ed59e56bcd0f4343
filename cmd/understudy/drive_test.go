package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
)

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// `understudy drive --auto` takes a ride from offer to completion.
func TestDriveAutoCompletesATrip(t *testing.T) {
	dataDir := t.TempDir()
	s := mustServe(t, "--data-dir", dataDir, "--match-interval", "0")
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"drive", "--addr", s.Addr(), "--data-dir", dataDir, "--sub", "d-demo",
			"--lat", "37.5668", "--lng", "126.9783", "--auto", "--step", "10ms"}, &out, &out)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("drive: %v", err)
		}
	}()
	dispatchtest.Eventually(t, supplied(s.engine, 1))
	ride, err := s.engine.Riders().RequestRide(context.Background(), "u-1", dispatch.Point{Lat: 37.5665, Lng: 126.978}, dispatch.Point{Lat: 37.5512, Lng: 126.9882})
	if err != nil {
		t.Fatal(err)
	}
	dispatchtest.Eventually(t, func() error {
		r, err := s.engine.Riders().Ride(context.Background(), ride.ID)
		if err == nil && r.Status != dispatch.RideCompleted {
			err = fmt.Errorf("ride %s is %s, want completed by the demo driver", ride.ID, r.Status)
		}
		return err
	})
	dispatchtest.Eventually(t, func() error {
		o := out.String()
		for _, want := range []string{`"type":"welcome"`, `"type":"offer"`, `"status":"completed"`} {
			if !strings.Contains(o, want) {
				return fmt.Errorf("drive printed no %s in %q", want, o)
			}
		}
		return nil
	})
}
