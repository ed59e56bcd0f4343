package rider

import (
	"context"

	"github.com/understudy/understudy/dispatch"
)

// Ride is a ride as the rider API shows it (the contract's ride object).
type Ride = dispatch.RideView

// Driver is the driver of a ride as its rider sees it: its location only while the
// ride is active.
type Driver = dispatch.RideDriver

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
	var loc *dispatch.Point
	if r.DriverID != "" && !r.Status.Final() {
		if d, err := a.Engine.Driver(ctx, r.DriverID); err == nil && d.Location != nil {
			p := *d.Location
			loc = &p
		}
	}
	return r.View(loc)
}
