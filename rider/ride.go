package rider

import (
	"context"
	"time"

	"github.com/understudy/understudy/dispatch"
)

// Ride is a ride as the rider API shows it (the contract's ride object).
type Ride struct {
	ID      string              `json:"id"`
	RiderID string              `json:"rider_id"`
	Status  dispatch.RideStatus `json:"status"`
	Pickup  dispatch.Point      `json:"pickup"`
	Dropoff dispatch.Point      `json:"dropoff"`
	// Driver is the assigned driver, nil until a driver accepts.
	Driver    *Driver        `json:"driver"`
	Fare      dispatch.Money `json:"fare"`
	CreatedAt time.Time      `json:"created_at"` // RFC 3339, UTC
	UpdatedAt time.Time      `json:"updated_at"` // RFC 3339, UTC
}

// Driver is the driver of a ride as its rider sees it.
type Driver struct {
	ID string `json:"id"`
	// Location is the driver's last known position while the ride is active; nil once
	// the ride has ended or when the driver has sent none.
	Location *dispatch.Point `json:"location"`
}

// Estimate is the answer of POST /v1/estimates.
type Estimate struct {
	Fare dispatch.Money `json:"fare"`
	// PickupETAS is the nearest available driver's time to the pickup in seconds, nil
	// when no driver is near.
	PickupETAS *int    `json:"pickup_eta_s"`
	DistanceM  float64 `json:"distance_m"`
}

// view turns a domain ride into what its rider sees, reading the driver's location
// while the ride is active.
func (a *API) view(ctx context.Context, r dispatch.Ride) Ride {
	v := Ride{
		ID: r.ID, RiderID: r.RiderID, Status: r.Status, Pickup: r.Pickup, Dropoff: r.Dropoff,
		Fare: r.Fare, CreatedAt: r.CreatedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC(),
	}
	if r.DriverID != "" {
		v.Driver = &Driver{ID: r.DriverID}
		if !r.Status.Final() {
			if d, err := a.Engine.Driver(ctx, r.DriverID); err == nil && d.Location != nil {
				p := *d.Location
				v.Driver.Location = &p
			}
		}
	}
	return v
}
