package dispatch_test

import (
	"testing"

	"go.uber.org/goleak"
)

// The engine's loop and the tests' concurrent drivers must all stop with their tests.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
