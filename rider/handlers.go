package rider

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"

	"github.com/understudy/understudy/dispatch"
)

// requestRide is POST /v1/rides.
func (a *API) requestRide(w http.ResponseWriter, r *http.Request, id dispatch.Identity) error {
	q, err := a.readRideRequest(w, r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	var (
		ride     dispatch.Ride
		replayed bool
	)
	if keys, ok := r.Header[http.CanonicalHeaderKey(IdempotencyKeyHeader)]; ok {
		if len(keys) != 1 || !validKey(keys[0]) {
			return invalid("%s must be one value of 1 to %d visible ASCII characters", IdempotencyKeyHeader, maxKeyLen)
		}
		fp := fingerprint(http.MethodPost, pathRides, id.Subject, q)
		ride, replayed, err = a.createOnce(ctx, id.Subject, keys[0], fp, q)
		if errors.Is(err, dispatch.ErrIdempotencyInFlight) {
			w.Header().Set("Retry-After", "1")
		}
	} else {
		ride, err = a.Engine.RequestRide(ctx, id.Subject, q.Pickup, q.Dropoff)
		if err == nil {
			a.Metrics.idempotency("none")
		}
	}
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/rides/"+ride.ID)
	if replayed {
		w.Header().Set(ReplayedHeader, "true")
	}
	writeJSON(w, http.StatusCreated, a.view(ctx, ride))
	return nil
}

// getRide is GET /v1/rides/{id}.
func (a *API) getRide(w http.ResponseWriter, r *http.Request, id dispatch.Identity) error {
	ride, err := a.ownedRide(r.Context(), id, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, a.view(r.Context(), ride))
	return nil
}

// cancelRide is POST /v1/rides/{id}/cancel. A body, if any, is ignored (once checked
// like every body: JSON, within the limit).
func (a *API) cancelRide(w http.ResponseWriter, r *http.Request, id dispatch.Identity) error {
	ctx := r.Context()
	ride, err := a.ownedRide(ctx, id, r.PathValue("id"))
	if err != nil {
		return err
	}
	ride, err = a.Engine.CancelRide(ctx, ride.ID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, a.view(ctx, ride))
	return nil
}

// estimate is POST /v1/estimates.
func (a *API) estimate(w http.ResponseWriter, r *http.Request, _ dispatch.Identity) error {
	q, err := a.readRideRequest(w, r)
	if err != nil {
		return err
	}
	est, err := a.Engine.Estimate(q.Pickup, q.Dropoff)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, Estimate{Fare: est.Fare, PickupETAS: est.PickupETAS, DistanceM: est.DistanceM})
	return nil
}

// maxRideIDLen bounds the ids looked up; longer ones cannot exist.
const maxRideIDLen = 128

// ownedRide returns ride rideID if the caller may see it: its rider, or an admin.
// Anyone else gets not found, so ride ids cannot be probed.
func (a *API) ownedRide(ctx context.Context, id dispatch.Identity, rideID string) (dispatch.Ride, error) {
	if rideID == "" || len(rideID) > maxRideIDLen {
		return dispatch.Ride{}, dispatch.ErrRideNotFound
	}
	ride, err := a.Engine.Ride(ctx, rideID)
	if err != nil {
		return dispatch.Ride{}, err
	}
	if id.Role != dispatch.RoleAdmin && ride.RiderID != id.Subject {
		return dispatch.Ride{}, dispatch.ErrRideNotFound
	}
	return ride, nil
}

// readRideRequest reads at most MaxBodyBytes and decodes a ride request.
func (a *API) readRideRequest(w http.ResponseWriter, r *http.Request) (RideRequest, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.Config.MaxBodyBytes))
	if err != nil {
		if errBodyTooLarge(err) {
			return RideRequest{}, dispatch.Errorf(dispatch.ECodeTooLarge, "request body is over %d bytes", a.Config.MaxBodyBytes)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return RideRequest{}, invalid("the request body did not arrive in time")
		}
		return RideRequest{}, invalid("reading the request body failed")
	}
	return DecodeRideRequest(body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
