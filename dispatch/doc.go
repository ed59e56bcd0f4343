// Package dispatch is Understudy's domain: drivers, rides and offers, the engine that
// matches them (its parts each in a file named after it: rides, drivers, offers, trips,
// pay, matcher, timers, replicas, sweep, restore, and the change protocol they all use
// in change.go), and the small interfaces it needs from the outside world (Store,
// RideLog, Ledger, Notifier, Peers, Metrics; time is Engine.Now). The H3 supply index
// and the batch solver are packages of their own (dispatch/supply, dispatch/assign).
// It imports no Redis, NATS or HTTP package; adapters for those live in subpackages
// named after what they adapt.
package dispatch
