package driver

import (
	"time"

	"github.com/understudy/understudy/dispatch"
)

// Ride is the contract's view of a ride, as frames carry it. The rider API has the same
// shape; the two may share one type once both are settled.
type Ride struct {
	ID        string              `json:"id"`
	RiderID   string              `json:"rider_id"`
	Status    dispatch.RideStatus `json:"status"`
	Pickup    dispatch.Point      `json:"pickup"`
	Dropoff   dispatch.Point      `json:"dropoff"`
	Driver    *RideDriver         `json:"driver"` // null until a driver accepts
	Fare      dispatch.Money      `json:"fare"`
	CreatedAt time.Time           `json:"created_at"`
	UpdatedAt time.Time           `json:"updated_at"`
}

// RideDriver is the driver of a ride and its last known position.
type RideDriver struct {
	ID       string          `json:"id"`
	Location *dispatch.Point `json:"location"` // null before the first location frame
}

// NewRide is the view of r; loc is its driver's last known position, if any.
func NewRide(r dispatch.Ride, loc *dispatch.Point) Ride {
	v := Ride{
		ID: r.ID, RiderID: r.RiderID, Status: r.Status, Pickup: r.Pickup, Dropoff: r.Dropoff,
		Fare: r.Fare, CreatedAt: r.CreatedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC(),
	}
	if r.DriverID != "" {
		v.Driver = &RideDriver{ID: r.DriverID, Location: loc}
	}
	return v
}
