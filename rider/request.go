package rider

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"strconv"

	"github.com/understudy/understudy/dispatch"
)

// RideRequest is the body of POST /v1/rides and POST /v1/estimates.
type RideRequest struct {
	Pickup  dispatch.Point `json:"pickup"`
	Dropoff dispatch.Point `json:"dropoff"`
}

// DecodeRideRequest parses and validates a ride request body strictly: one JSON object
// with exactly the fields pickup and dropoff, each an object with exactly the numeric
// fields lat and lng, in range. Field names match exactly (no case folding); unknown,
// duplicate and missing fields, nulls, other types and trailing data are refused. Every
// error is a *dispatch.Error with code invalid whose message names the field.
func DecodeRideRequest(body []byte) (RideRequest, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var (
		q            RideRequest
		seenP, seenD bool
	)
	err := readObject(dec, "", func(name string) error {
		switch name {
		case "pickup":
			seenP = true
			return readPoint(dec, name, &q.Pickup)
		case "dropoff":
			seenD = true
			return readPoint(dec, name, &q.Dropoff)
		}
		return invalid("unknown field %q", name)
	})
	if err != nil {
		return RideRequest{}, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return RideRequest{}, invalid("unexpected data after the JSON object")
	}
	switch {
	case !seenP:
		return RideRequest{}, invalid("pickup is required")
	case !seenD:
		return RideRequest{}, invalid("dropoff is required")
	}
	return q, nil
}

// readObject reads one JSON object, calling field for each member name; field must
// read the member's value. Duplicate names are refused.
func readObject(dec *json.Decoder, path string, field func(name string) error) error {
	what := "the body"
	if path != "" {
		what = path
	}
	tok, err := dec.Token()
	if err != nil {
		if errors.Is(err, io.EOF) && path == "" {
			return invalid("request body is empty: want a JSON object")
		}
		return syntaxError(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return invalid("%s: want a JSON object, got %s", what, dispatch.JSONKind(tok))
	}
	seen := make(map[string]bool, 2)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return syntaxError(err)
		}
		name, ok := tok.(string)
		if !ok { // the decoder only yields strings in key position; be safe anyway
			return invalid("%s: want a member name, got %s", what, dispatch.JSONKind(tok))
		}
		if seen[name] {
			return invalid("duplicate field %q", join(path, name))
		}
		seen[name] = true
		if err := field(name); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return syntaxError(err)
	}
	return nil
}

func readPoint(dec *json.Decoder, path string, p *dispatch.Point) error {
	var seenLat, seenLng bool
	err := readObject(dec, path, func(name string) error {
		switch name {
		case "lat":
			seenLat = true
			return readNumber(dec, join(path, name), &p.Lat)
		case "lng":
			seenLng = true
			return readNumber(dec, join(path, name), &p.Lng)
		}
		return invalid("unknown field %q", join(path, name))
	})
	switch {
	case err != nil:
		return err
	case !seenLat:
		return invalid("%s.lat is required", path)
	case !seenLng:
		return invalid("%s.lng is required", path)
	}
	if err := p.Validate(); err != nil {
		return invalid("%s: %s", path, dispatch.ErrorMessage(err))
	}
	return nil
}

func readNumber(dec *json.Decoder, path string, dst *float64) error {
	tok, err := dec.Token()
	if err != nil {
		return syntaxError(err)
	}
	n, ok := tok.(json.Number)
	if !ok {
		return invalid("%s: want a number, got %s", path, dispatch.JSONKind(tok))
	}
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil {
		return invalid("%s: number %s is out of range", path, n)
	}
	*dst = f + 0 // turns -0 into 0, so equal requests have equal fingerprints
	return nil
}

func syntaxError(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return invalid("malformed JSON at byte %d: %s", se.Offset, se.Error())
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return invalid("malformed JSON: unexpected end of the body")
	}
	return invalid("malformed JSON: %s", err.Error())
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func invalid(format string, args ...any) error {
	return dispatch.Errorf(dispatch.ECodeInvalid, format, args...)
}

// canonical is the request's canonical JSON: fixed member order, shortest number
// formatting. Two bodies that mean the same request have the same canonical form.
func (q RideRequest) canonical() []byte {
	b, _ := json.Marshal(q) // finite float64s and fixed structs always marshal
	return b
}

// fingerprint identifies a request for idempotency: the hex SHA-256 of method, path,
// rider and canonical body.
func fingerprint(method, path, riderID string, q RideRequest) string {
	h := sha256.New()
	for _, part := range []string{method, path, riderID} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	h.Write(q.canonical())
	return hex.EncodeToString(h.Sum(nil))
}
