package driver

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/httpauth"
	"github.com/understudy/understudy/dispatch/httproute"
	"github.com/understudy/understudy/dispatch/problem"
)

// Pay serves the contract's pay routes from the ledger, so drivers see what they are
// owed and the primary platform can settle after the outage:
//
//	GET /v1/driver/trips?since=RFC3339     a driver's completed trips and cancellation fees
//	GET /v1/driver/earnings?since=RFC3339  their totals for the period
//	GET /v1/admin/ledger?since=RFC3339     every entry as NDJSON, in order (admin)
//
// Each caller (role and subject) is rate limited as on the rider API, by Limiter.
type Pay struct {
	Ledger   dispatch.Ledger
	Verifier dispatch.Verifier
	// WriteTimeout, if set, bounds each line of the ledger's NDJSON instead of the
	// whole answer (the server's write timeout), so a long export is not cut short.
	WriteTimeout time.Duration
	// Limiter holds the per-caller rate limits (the rider API's, so one caller has one
	// bucket on every route); nil limits nothing.
	Limiter dispatch.RateLimiter
	Logger  *slog.Logger // nil logs nothing
}

// Routes lists the pay routes.
func (p *Pay) Routes() []httproute.Route {
	return []httproute.Route{
		{Method: http.MethodGet, Path: "/v1/driver/trips", Handler: http.HandlerFunc(p.trips)},
		{Method: http.MethodGet, Path: "/v1/driver/earnings", Handler: http.HandlerFunc(p.earnings)},
		{Method: http.MethodGet, Path: "/v1/admin/ledger", Handler: http.HandlerFunc(p.ledger)},
	}
}

// Trip is one ledger entry as its driver sees it: a completed trip, or the fee for a
// ride cancelled after the driver arrived (Kind says which; a fee has no StartedAt and
// no distance, and CompletedAt is when the rider cancelled).
type Trip struct {
	RideID      string             `json:"ride_id"`
	Kind        dispatch.EntryKind `json:"kind"`
	RequestedAt time.Time          `json:"requested_at"`
	StartedAt   time.Time          `json:"started_at,omitzero"`
	CompletedAt time.Time          `json:"completed_at"`
	DistanceM   float64            `json:"distance_m"`
	Fare        dispatch.Money     `json:"fare"`
}

// Trips is the answer of GET /v1/driver/trips.
type Trips struct {
	DriverID string `json:"driver_id"`
	Since    string `json:"since"`
	Trips    []Trip `json:"trips"`
}

// caller verifies r's bearer token, checks its role and takes a token from the
// caller's rate limit.
func (p *Pay) caller(r *http.Request, role dispatch.Role) (dispatch.Identity, error) {
	id, err := httpauth.Authenticate(p.Verifier, r, role)
	if err != nil {
		return dispatch.Identity{}, err
	}
	if err := dispatch.Throttle(r.Context(), p.Limiter, id, p.Logger); err != nil {
		return dispatch.Identity{}, err
	}
	return id, nil
}

// since reads the since query parameter; absent means from the beginning.
func since(r *http.Request) (time.Time, error) {
	s := r.URL.Query().Get("since")
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, dispatch.Errorf(dispatch.ECodeInvalid, "since %q is not an RFC 3339 time", clip(s))
	}
	return t, nil
}

func (p *Pay) trips(w http.ResponseWriter, r *http.Request) {
	id, from, ok := p.driverQuery(w, r)
	if !ok {
		return
	}
	out := Trips{DriverID: id.Subject, Since: formatSince(from), Trips: []Trip{}}
	err := p.Ledger.Entries(r.Context(), from, id.Subject, func(e dispatch.LedgerEntry) error {
		out.Trips = append(out.Trips, Trip{RideID: e.RideID, Kind: e.Kind, RequestedAt: e.RequestedAt, StartedAt: e.StartedAt,
			CompletedAt: e.CompletedAt, DistanceM: e.DistanceM, Fare: e.Fare})
		return nil
	})
	if err != nil {
		problem.Write(w, r, err)
		return
	}
	writeJSON(w, out)
}

func (p *Pay) earnings(w http.ResponseWriter, r *http.Request) {
	id, from, ok := p.driverQuery(w, r)
	if !ok {
		return
	}
	out := dispatch.Earnings{DriverID: id.Subject, Since: formatSince(from), Fares: []dispatch.Money{}}
	err := p.Ledger.Entries(r.Context(), from, id.Subject, func(e dispatch.LedgerEntry) error {
		out.Add(e)
		return nil
	})
	if err != nil {
		problem.Write(w, r, err)
		return
	}
	writeJSON(w, out)
}

// driverQuery checks a driver's request for its own pay and reads since.
func (p *Pay) driverQuery(w http.ResponseWriter, r *http.Request) (dispatch.Identity, time.Time, bool) {
	id, err := p.caller(r, dispatch.RoleDriver)
	if err == nil {
		var from time.Time
		if from, err = since(r); err == nil {
			return id, from, true
		}
	}
	problem.Write(w, r, err)
	return dispatch.Identity{}, time.Time{}, false
}

func (p *Pay) ledger(w http.ResponseWriter, r *http.Request) {
	if _, err := p.caller(r, dispatch.RoleAdmin); err != nil {
		problem.Write(w, r, err)
		return
	}
	from, err := since(r)
	if err != nil {
		problem.Write(w, r, err)
		return
	}
	// Entries stream as they are read. An error before the first line is a problem
	// answer; after it, it can only cut the stream short.
	enc := json.NewEncoder(w)
	rc := http.NewResponseController(w)
	wrote := false
	err = p.Ledger.Entries(r.Context(), from, "", func(e dispatch.LedgerEntry) error {
		if p.WriteTimeout > 0 {
			_ = rc.SetWriteDeadline(time.Now().Add(p.WriteTimeout))
		}
		if !wrote {
			w.Header().Set("Content-Type", "application/x-ndjson")
			wrote = true
		}
		return enc.Encode(e)
	})
	switch {
	case err != nil && !wrote:
		problem.Write(w, r, err)
	case !wrote:
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
	}
}

func formatSince(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
