// Package dispatchtest holds helpers for the tests of every package: one way to wait
// for a condition with a deadline, instead of sleeping.
package dispatchtest

import (
	"testing"
	"time"
)

// Patience is the deadline tests give a condition to become true when they have no
// reason to choose another. It is generous on purpose: the suite runs on busy
// 2-core machines, and a correctness test must never fail because the machine is slow.
const Patience = 60 * time.Second

// CheckFor calls f every interval until it returns nil, and fails tb with f's last
// error if that has not happened within total (as nats-server's tests' checkFor does).
func CheckFor(tb testing.TB, total, interval time.Duration, f func() error) {
	tb.Helper()
	if err := Within(total, interval, f); err != nil {
		tb.Fatalf("not within %v: %v", total, err)
	}
}

// Eventually is CheckFor with Patience and a 10 ms interval.
func Eventually(tb testing.TB, f func() error) {
	tb.Helper()
	CheckFor(tb, Patience, 10*time.Millisecond, f)
}

// Await is Eventually for a condition that yields a value: it calls f every 10 ms
// until f returns a nil error, and returns the value of that call. It fails tb with
// f's last error if that has not happened within Patience.
func Await[T any](tb testing.TB, f func() (T, error)) T {
	tb.Helper()
	var v T
	Eventually(tb, func() error {
		var err error
		v, err = f()
		return err
	})
	return v
}

// Within calls f every interval until it returns nil and returns nil, or returns f's
// last error once total has passed. For goroutines other than the test's, which must
// not call tb.Fatal.
func Within(total, interval time.Duration, f func() error) error {
	deadline := time.Now().Add(total)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(interval)
	}
}
