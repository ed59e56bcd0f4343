// Package dispatch is Understudy's domain: drivers, rides and offers, the H3 supply
// index, the matcher that turns ride requests into offers, and the small interfaces it
// needs from the outside world (Store, Notifier, Clock). It imports no Redis, NATS or
// HTTP package; adapters for those live in subpackages named after what they adapt.
package dispatch
