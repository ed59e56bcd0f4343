package rider

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/understudy/understudy/dispatch"
)

// Idempotency headers.
const (
	// IdempotencyKeyHeader carries the client's key for POST /v1/rides.
	IdempotencyKeyHeader = "Idempotency-Key"
	// ReplayedHeader is "true" on an answer that replays an earlier request's ride.
	ReplayedHeader = "Idempotent-Replayed"
)

// maxKeyLen is the longest Idempotency-Key accepted.
const maxKeyLen = 255

// validKey reports whether k is 1 to maxKeyLen visible ASCII characters.
func validKey(k string) bool {
	if len(k) == 0 || len(k) > maxKeyLen {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// createOnce creates the ride of request q at most once per rider and key:
//
//   - the first request reserves the key atomically, creates the ride and records its
//     id (or releases the key if creation failed, so a retry can run);
//   - a later request with the same fingerprint replays: it answers the ride's
//     current state (replayed is true);
//   - a request with another fingerprint is ErrIdempotencyConflict (422);
//   - a request that finds the key still reserved by a request in flight polls for up
//     to InFlightWait for it to finish, then answers ErrIdempotencyInFlight (409).
func (a *API) createOnce(ctx context.Context, riderID, key, fp string, q RideRequest) (ride dispatch.Ride, replayed bool, err error) {
	deadline := time.Now().Add(a.Config.InFlightWait)
	pause := 5 * time.Millisecond
	for {
		rec, reserved, err := a.Idempotency.Reserve(ctx, riderID, key, fp, a.Config.PendingTTL)
		if err != nil {
			return dispatch.Ride{}, false, fmt.Errorf("reserve idempotency key: %w", err)
		}
		switch {
		case reserved:
			ride, err := a.Engine.RequestRide(ctx, riderID, q.Pickup, q.Dropoff)
			// The outcome must be recorded even when the client has gone away.
			bg := context.WithoutCancel(ctx)
			if err != nil {
				if rerr := settleKey(bg, func() error { return a.Idempotency.Release(bg, riderID, key, fp) }); rerr != nil {
					a.Logger.Error("release idempotency key", slog.String("rider", riderID), slog.Any("err", rerr))
				}
				return dispatch.Ride{}, false, err
			}
			if err := settleKey(bg, func() error {
				return a.Idempotency.Complete(bg, riderID, key, fp, ride.ID, a.Config.IdempotencyTTL)
			}); err != nil {
				// The ride exists and is answered; only a later replay could miss it
				// (and, once the reservation expired, make a second ride).
				a.Logger.Warn("record idempotency key", slog.String("rider", riderID), slog.String("ride", ride.ID), slog.Any("err", err))
			}
			a.Metrics.idempotency("created")
			return ride, false, nil
		case rec.Fingerprint != fp:
			a.Metrics.idempotency("conflict")
			return dispatch.Ride{}, false, dispatch.ErrIdempotencyConflict
		case rec.Done():
			ride, err := a.Engine.Ride(ctx, rec.RideID)
			if errors.Is(err, dispatch.ErrRideNotFound) || dispatch.ErrorCode(err) == dispatch.ECodeNoLease {
				// In a deployment the keys are shared by the regions: the ride is at
				// the region serving its pickup, which the client is sent to (421).
				// (no_lease: this region is taking an area over, maybe another one.)
				if _, rerr := a.Engine.Estimate(q.Pickup, q.Dropoff); dispatch.RedirectOf(rerr) != nil {
					err = rerr
				}
			}
			if err != nil {
				return dispatch.Ride{}, false, fmt.Errorf("replay ride %s: %w", rec.RideID, err)
			}
			a.Metrics.idempotency("replayed")
			return ride, true, nil
		}
		// The first request is still in flight: wait for its outcome.
		if !time.Now().Add(pause).Before(deadline) {
			a.Metrics.idempotency("in_flight")
			return dispatch.Ride{}, false, dispatch.ErrIdempotencyInFlight
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return dispatch.Ride{}, false, dispatch.ErrIdempotencyInFlight
		case <-t.C:
		}
		pause = min(2*pause, 100*time.Millisecond)
	}
}

// settleKey runs write, the completion or release of a key this request reserved,
// again after 100, 300 and 900 ms while it fails with a refusal to retry (the store
// too busy or electing a leader): a key left reserved answers the client's retries
// 409 for its whole pending time, and one left unrecorded could replay nothing.
func settleKey(ctx context.Context, write func() error) error {
	pause := 100 * time.Millisecond
	for attempt := 0; ; attempt++ {
		err := write()
		if err == nil || attempt == 3 || dispatch.ErrorCode(err) != dispatch.ECodeUnavailable {
			return err
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		pause *= 3
	}
}
