package dispatchtest_test

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
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

func TestAwaitReturnsTheValueOfTheCallThatSucceeded(t *testing.T) {
	n := 0
	got := dispatchtest.Await(t, func() (int, error) {
		n++
		if n < 3 {
			return n, errors.New("not yet")
		}
		return n * 10, nil
	})
	if got != 30 || n != 3 {
		t.Fatalf("Await = %d after %d tries, want 30 after 3", got, n)
	}
}

// The failure message carries the condition's last error, whatever helper waited.
func TestCheckForFailsWithTheLastError(t *testing.T) {
	rec := &recordingTB{TB: t}
	done := make(chan struct{})
	go func() { // Fatalf ends the goroutine it runs in, as in a real test
		defer close(done)
		n := 0
		dispatchtest.CheckFor(rec, 20*time.Millisecond, time.Millisecond, func() error {
			n++
			return fmt.Errorf("saw %d", n)
		})
	}()
	<-done
	if !strings.HasPrefix(rec.msg, "not within 20ms: saw ") {
		t.Fatalf("CheckFor failed with %q, want the last error", rec.msg)
	}
}

// recordingTB keeps the message of Fatalf instead of failing the test.
type recordingTB struct {
	testing.TB
	msg string
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
