package driver

import "github.com/understudy/understudy/dispatch"

// Ride is the contract's view of a ride, as frames carry it (the rider API shows the
// same type).
type Ride = dispatch.RideView

// RideDriver is the driver of a ride and its last known position.
type RideDriver = dispatch.RideDriver

// NewRide is the view of r; loc is its driver's last known position, if any.
func NewRide(r dispatch.Ride, loc *dispatch.Point) Ride { return r.View(loc) }
