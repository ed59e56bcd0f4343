package dispatchtest_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/understudy/understudy/dispatch/dispatchtest"
)

func TestWithinReportsLastError(t *testing.T) {
	n := 0
	err := dispatchtest.Within(30*time.Millisecond, time.Millisecond, func() error {
		n++
		return fmt.Errorf("try %d", n)
	})
	if err == nil || err.Error() != fmt.Sprintf("try %d", n) || n < 2 {
		t.Fatalf("Within = %v after %d tries, want the last try's error", err, n)
	}
}

func TestWithinStopsOnSuccess(t *testing.T) {
	n := 0
	err := dispatchtest.Within(time.Minute, time.Millisecond, func() error {
		n++
		if n < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || n != 3 {
		t.Fatalf("Within = %v after %d tries, want nil after 3", err, n)
	}
}
