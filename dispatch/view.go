package dispatch

import "time"

// RideView is the client contract's ride object: what the rider API answers and what
// driver frames carry. It leaves out the engine's bookkeeping (offers, declines,
// versions).
type RideView struct {
	ID      string     `json:"id"`
	RiderID string     `json:"rider_id"`
	Status  RideStatus `json:"status"`
	Pickup  Point      `json:"pickup"`
	Dropoff Point      `json:"dropoff"`
	// Driver is the assigned driver, null until a driver accepts.
	Driver    *RideDriver `json:"driver"`
	Fare      Money       `json:"fare"`
	CreatedAt time.Time   `json:"created_at"` // RFC 3339, UTC
	UpdatedAt time.Time   `json:"updated_at"` // RFC 3339, UTC
}

// RideDriver is the driver of a ride and its last known position.
type RideDriver struct {
	ID       string `json:"id"`
	Location *Point `json:"location"` // null when not known or not shown
}

// View is the contract view of r; driverLoc is its driver's position to show, if any.
func (r Ride) View(driverLoc *Point) RideView {
	v := RideView{
		ID: r.ID, RiderID: r.RiderID, Status: r.Status, Pickup: r.Pickup, Dropoff: r.Dropoff,
		Fare: r.Fare, CreatedAt: r.CreatedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC(),
	}
	if r.DriverID != "" {
		v.Driver = &RideDriver{ID: r.DriverID, Location: driverLoc}
	}
	return v
}
