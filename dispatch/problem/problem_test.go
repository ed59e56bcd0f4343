package problem_test

import (
	"encoding/json"
	"errors"
	"net/http/httptest"
	"testing"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/problem"
)

func TestWrite(t *testing.T) {
	limited := &dispatch.Error{Code: dispatch.ECodeRateLimited, Message: "slow down", RetryAfterS: 3}
	for _, c := range []struct {
		err        error
		status     int
		code       string
		detail     string
		retryAfter string
		challenge  string
	}{
		{dispatch.ErrRideNotFound, 404, "not_found", "ride not found", "", ""},
		{dispatch.Errorf(dispatch.ECodeInvalid, "latitude 91 is out of range"), 400, "invalid", "latitude 91 is out of range", "", ""},
		{limited, 429, "rate_limited", "slow down", "3", ""},
		{&dispatch.Error{Code: dispatch.ECodeNoLease, Message: "nobody holds the lease", RetryAfterS: 1}, 503, "no_lease", "nobody holds the lease", "1", ""},
		{errors.New("dial tcp 10.0.0.7:6379: refused"), 500, "internal", "internal error", "", ""},
		{dispatch.Errorf(dispatch.ECodeUnauthorized, "missing bearer token"), 401, "unauthorized", "missing bearer token", "", `Bearer realm="understudy"`},
		{dispatch.Errorf(dispatch.ECodeForbidden, "drivers may not"), 403, "forbidden", "drivers may not", "", ""},
	} {
		rec := httptest.NewRecorder()
		problem.Write(rec, httptest.NewRequest("GET", "/v1/rides/r_1", nil), c.err)
		var d problem.Details
		if err := json.Unmarshal(rec.Body.Bytes(), &d); err != nil {
			t.Fatal(err)
		}
		if rec.Code != c.status || d.Status != c.status || d.Code != c.code || d.Detail != c.detail ||
			d.Instance != "/v1/rides/r_1" || d.Title == "" ||
			rec.Header().Get("Content-Type") != "application/problem+json" || rec.Header().Get("Retry-After") != c.retryAfter ||
			rec.Header().Get("WWW-Authenticate") != c.challenge {
			t.Errorf("%v: %d %+v headers %v", c.err, rec.Code, d, rec.Header())
		}
	}
}
