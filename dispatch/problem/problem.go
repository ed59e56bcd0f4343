// Package problem writes errors as RFC 9457 application/problem+json, using the
// dispatch error table for the status, so every HTTP route answers errors alike.
package problem

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/understudy/understudy/dispatch"
)

// Details is the problem+json body. Code is the contract's stable machine-readable code.
type Details struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail,omitempty"`
	Code     string `json:"code"`
	Instance string `json:"instance,omitempty"`
	// Region and URL name the region to ask instead (code wrong_region).
	Region string `json:"region,omitempty"`
	URL    string `json:"url,omitempty"`
}

// Challenge is the WWW-Authenticate header of every 401 answer: the routes take
// bearer tokens (RFC 6750).
const Challenge = `Bearer realm="understudy"`

// Write answers r with err as a problem. A *dispatch.Error with RetryAfter set adds
// the Retry-After header, a 401 the WWW-Authenticate Challenge. The cause of a 5xx is
// noted for LogServerErrors.
func Write(w http.ResponseWriter, r *http.Request, err error) {
	code := dispatch.ErrorCode(err)
	info := code.Info()
	if info.HTTPStatus >= 500 {
		noteCause(r, err)
	}
	if info.HTTPStatus == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", Challenge)
	}
	if s := dispatch.RetryAfter(err); s > 0 { // rate_limited, no_lease, unavailable
		w.Header().Set("Retry-After", strconv.Itoa(s))
	}
	d := Details{
		Type:   "https://understudy.dev/problems/" + string(code),
		Title:  info.Title,
		Status: info.HTTPStatus,
		Detail: dispatch.ErrorMessage(err),
		Code:   string(code),
	}
	if to := dispatch.RedirectOf(err); to != nil {
		d.Region, d.URL = to.Region, to.URL
	}
	if r != nil {
		d.Instance = r.URL.Path
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(d.Status)
	_ = json.NewEncoder(w).Encode(d)
}
