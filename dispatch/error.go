package dispatch

import (
	"errors"
	"fmt"
)

// ECode is a stable, machine-readable error code. Clients (apps, partner backends,
// load tests) switch on it, so codes are never renamed.
type ECode string

// Error codes. The table in codeTable maps each to its HTTP status and websocket
// close code; it is the only place that mapping is written.
const (
	ECodeInvalid        ECode = "invalid"              // malformed input or a value out of range
	ECodeUnauthorized   ECode = "unauthorized"         // no token or a bad one
	ECodeForbidden      ECode = "forbidden"            // a valid token with the wrong role
	ECodeNotFound       ECode = "not_found"            // unknown ride, offer or driver
	ECodeConflict       ECode = "conflict"             // illegal state change
	ECodeTooLarge       ECode = "too_large"            // body or frame over the limit
	ECodeIdempotency    ECode = "idempotency_conflict" // key reused with another body
	ECodeRateLimited    ECode = "rate_limited"         // too many requests or frames
	ECodeWrongRegion    ECode = "wrong_region"         // another region serves that area: go there (Error.Redirect)
	ECodeOutsideService ECode = "outside_service_area" // a point in no area of the deployment
	ECodeNoLease        ECode = "no_lease"             // this region should serve that area but holds no lease for it now
	ECodeUnavailable    ECode = "unavailable"          // shutting down, or the durable log is away
	ECodeInternal       ECode = "internal"             // a bug or an infrastructure failure
)

// Error codes only HTTP produces: requests refused before any route handles them.
const (
	ECodeMethod    ECode = "method_not_allowed"     // a known path asked with a method it does not serve
	ECodeMediaType ECode = "unsupported_media_type" // a body that is not JSON, or in an encoding not decoded
)

// CodeInfo is how one error code is expressed on each transport.
type CodeInfo struct {
	HTTPStatus int    // status of the application/problem+json response
	Title      string // problem "title": a short summary that does not change per occurrence
	WSClose    int    // websocket close code when the code ends a driver's socket; 0 = socket stays open
}

// codeTable is the single mapping from error code to transport. HTTP statuses and
// websocket close codes are written as numbers so the domain imports no HTTP package.
var codeTable = map[ECode]CodeInfo{
	ECodeInvalid:        {400, "Bad request", 0},
	ECodeUnauthorized:   {401, "Unauthorized", 0},
	ECodeForbidden:      {403, "Forbidden", 0},
	ECodeNotFound:       {404, "Not found", 0},
	ECodeMethod:         {405, "Method not allowed", 0},
	ECodeConflict:       {409, "Illegal state change", 0},
	ECodeTooLarge:       {413, "Too large", 1009},
	ECodeMediaType:      {415, "Unsupported media type", 0},
	ECodeIdempotency:    {422, "Idempotency key reused", 0},
	ECodeRateLimited:    {429, "Rate limited", 1008},
	ECodeWrongRegion:    {421, "Served by another region", 4002},
	ECodeOutsideService: {421, "Outside the service area", 0},
	ECodeNoLease:        {503, "No lease for this area", 0},
	ECodeUnavailable:    {503, "Unavailable", 1012},
	ECodeInternal:       {500, "Internal error", 1011},
}

// Info returns how code is expressed on HTTP and websocket; unknown codes are internal.
func (c ECode) Info() CodeInfo {
	if i, ok := codeTable[c]; ok {
		return i
	}
	return codeTable[ECodeInternal]
}

// Error is the one error type the domain returns to its callers. Transports read Code
// to choose a status; Message is safe to show to the client.
type Error struct {
	Code    ECode
	Message string
	Err     error // the sentinel or cause, for errors.Is; may be nil
	// RetryAfterS tells a client how many seconds to wait before it asks again
	// (rate_limited, no_lease, unavailable): the Retry-After header over HTTP.
	RetryAfterS int
	// Redirect is the region a wrong_region error sends the client to.
	Redirect *Redirect
}

// Redirect names the region that serves what the client asked for, and its URL.
type Redirect struct {
	Region string `json:"region"`
	URL    string `json:"url"`
}

// RedirectOf returns the Redirect of the first *Error in err's chain, or nil.
func RedirectOf(err error) *Redirect {
	var e *Error
	if errors.As(err, &e) {
		return e.Redirect
	}
	return nil
}

// RetryAfter returns the RetryAfterS of the first *Error in err's chain.
func RetryAfter(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfterS
	}
	return 0
}

func (e *Error) Error() string {
	if e.Err != nil && e.Message == "" {
		return e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with code and a formatted message.
func Errorf(code ECode, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, ECodeInternal for any
// other non-nil error, and "" for nil.
func ErrorCode(err error) ECode {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ECodeInternal
}

// ErrorMessage returns the client-safe message of err: the *Error's message, or a
// generic text for internal errors so no infrastructure detail leaks.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) && e.Code != ECodeInternal {
		return e.Error()
	}
	return "internal error"
}

func sentinel(code ECode, msg string) *Error { return &Error{Code: code, Message: msg} }

// Sentinels. Compare with errors.Is; each is an *Error with its code.
var (
	// ErrRideNotFound: no ride with that id (or not visible to the caller).
	ErrRideNotFound = sentinel(ECodeNotFound, "ride not found")
	// ErrDriverNotFound: no driver with that id has connected.
	ErrDriverNotFound = sentinel(ECodeNotFound, "driver not found")
	// ErrOfferExpired: the offer is not (or no longer) the driver's: revoked (expired,
	// taken or cancelled) before the answer. An id that was never the driver's offer
	// gets the same answer: the engine keeps no history of past offers to tell the two
	// apart, and the app hears offer_revoked for every offer it was really sent.
	ErrOfferExpired = sentinel(ECodeConflict, "offer is no longer valid")
	// ErrDriverBusy: the driver already holds an offer or a ride.
	ErrDriverBusy = sentinel(ECodeConflict, "driver is busy")
	// ErrIllegalTransition: the requested change is not allowed from the current state.
	ErrIllegalTransition = sentinel(ECodeConflict, "illegal state change")
	// ErrVersionConflict: a Store commit lost a race; the caller re-reads and retries.
	ErrVersionConflict = sentinel(ECodeConflict, "concurrent update")
	// ErrStaleEpoch: the writer's fencing epoch is older than the Store's; it lost its lease.
	ErrStaleEpoch = sentinel(ECodeUnavailable, "writer lost its lease")
	// ErrFenced: the ride log refused a write because another region has taken the
	// ride's area since this region's lease (the log's fence for the area moved on).
	ErrFenced = sentinel(ECodeNoLease, "this region no longer holds the area's lease")
	// ErrClosed: the engine is shutting down.
	ErrClosed = sentinel(ECodeUnavailable, "shutting down")
)

// wrapf wraps a sentinel with context while keeping its code and client message.
func wrapf(err *Error, format string, args ...any) *Error {
	return &Error{Code: err.Code, Message: fmt.Sprintf(format, args...) + ": " + err.Message, Err: err}
}
