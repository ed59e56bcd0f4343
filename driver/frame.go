package driver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/understudy/understudy/dispatch"
)

// Frame types sent by the driver app.
const (
	TypeLocation  = "location"
	TypeAvailable = "available"
	TypeOffline   = "offline"
	TypeAccept    = "accept"
	TypeDecline   = "decline"
	TypeArrived   = "arrived"
	TypeStart     = "start"
	TypeComplete  = "complete"
)

// Frame types sent by the server. TypeAck, TypeRide and TypeState extend the contract
// (see docs/driver-protocol.md).
const (
	TypeWelcome       = "welcome"
	TypeOffer         = "offer"
	TypeAssigned      = "assigned"
	TypeOfferRevoked  = "offer_revoked"
	TypeRideCancelled = "ride_cancelled"
	TypeError         = "error"
	TypeAck           = "ack"
	TypeRide          = "ride"
	TypeState         = "state"
	TypeReconnect     = "reconnect"
)

// Limits on the fields of a driver frame.
const (
	maxIDLen  = 128 // offer_id, ride_id
	maxRefLen = 128
	maxSpeed  = 150 // m/s, about 540 km/h
	maxEcho   = 64  // bytes of a client's string quoted back in an answer
)

// Frame is one driver-to-server frame. Which fields are set depends on Type; DecodeFrame
// returns only frames that passed Validate.
type Frame struct {
	Type string `json:"type"`
	// Ref is an optional client token echoed in the ack, ride or error frame that
	// answers this frame.
	Ref string `json:"ref,omitempty"`

	// location
	Lat     *float64   `json:"lat,omitempty"`
	Lng     *float64   `json:"lng,omitempty"`
	Heading *float64   `json:"heading,omitempty"` // degrees clockwise from north, [0, 360]
	Speed   *float64   `json:"speed,omitempty"`   // metres per second, [0, 150]
	TS      *time.Time `json:"ts,omitempty"`      // when the position was taken (RFC 3339)

	// accept, decline
	OfferID string `json:"offer_id,omitempty"`
	// arrived, start, complete
	RideID string `json:"ride_id,omitempty"`
}

// DecodeFrame parses and validates one text frame from a driver. It decodes strictly,
// as the rider API does: one JSON object, member names matched exactly, no name twice,
// each known field of its JSON type (null counts as absent), nothing after the object.
// Unknown fields are ignored. Every error is a *dispatch.Error with code invalid and a
// message fit for the driver app that names the field at fault.
func DecodeFrame(data []byte) (Frame, error) {
	f, err := decodeFrame(data)
	if err != nil {
		return Frame{}, err
	}
	if err := f.Validate(); err != nil {
		return f, err
	}
	return f, nil
}

func decodeFrame(data []byte) (Frame, error) {
	var f Frame
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return f, syntaxError(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return f, invalid("a frame is a JSON object, not %s", dispatch.JSONKind(tok))
	}
	var seen []string // a frame has a handful of members
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return f, syntaxError(err)
		}
		name, _ := tok.(string) // the decoder yields only strings in key position
		if slices.Contains(seen, name) {
			return f, invalid("duplicate field %q", clip(name))
		}
		seen = append(seen, name)
		switch name {
		case "type":
			err = readString(dec, name, &f.Type)
		case "ref":
			err = readString(dec, name, &f.Ref)
		case "offer_id":
			err = readString(dec, name, &f.OfferID)
		case "ride_id":
			err = readString(dec, name, &f.RideID)
		case "lat":
			err = readNumber(dec, name, &f.Lat)
		case "lng":
			err = readNumber(dec, name, &f.Lng)
		case "heading":
			err = readNumber(dec, name, &f.Heading)
		case "speed":
			err = readNumber(dec, name, &f.Speed)
		case "ts":
			var ts string
			if err = readString(dec, name, &ts); err == nil && ts != "" {
				var t time.Time
				if t.UnmarshalText([]byte(ts)) != nil {
					return f, invalid("ts: want an RFC 3339 time, got %q", clip(ts))
				}
				f.TS = &t
			}
		default:
			err = skipValue(dec)
		}
		if err != nil {
			return f, err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return f, syntaxError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return f, invalid("malformed JSON: data after the frame's object")
	}
	return f, nil
}

// readString reads a string member; null leaves dst as it is.
func readString(dec *json.Decoder, field string, dst *string) error {
	tok, err := dec.Token()
	if err != nil {
		return syntaxError(err)
	}
	switch v := tok.(type) {
	case string:
		*dst = v
		return nil
	case nil:
		return nil
	case json.Delim:
		_ = skipRest(dec)
	}
	return invalid("field %s: want a string, got %s", field, dispatch.JSONKind(tok))
}

// readNumber reads a number member; null leaves dst nil.
func readNumber(dec *json.Decoder, field string, dst **float64) error {
	tok, err := dec.Token()
	if err != nil {
		return syntaxError(err)
	}
	switch v := tok.(type) {
	case json.Number:
		n, err := strconv.ParseFloat(string(v), 64)
		if err != nil {
			return invalid("field %s: number out of range", field)
		}
		*dst = &n
		return nil
	case nil:
		*dst = nil
		return nil
	case json.Delim:
		_ = skipRest(dec)
	}
	return invalid("field %s: want a number, got %s", field, dispatch.JSONKind(tok))
}

// skipValue reads and drops one value of any type.
func skipValue(dec *json.Decoder) error {
	tok, err := dec.Token()
	if err != nil {
		return syntaxError(err)
	}
	if _, ok := tok.(json.Delim); ok {
		return skipRest(dec)
	}
	return nil
}

// skipRest drops the rest of an object or array whose opening delimiter was read.
func skipRest(dec *json.Decoder) error {
	for depth := 1; depth > 0; {
		tok, err := dec.Token()
		if err != nil {
			return syntaxError(err)
		}
		if d, ok := tok.(json.Delim); ok {
			if d == '{' || d == '[' {
				depth++
			} else {
				depth--
			}
		}
	}
	return nil
}

// syntaxError turns a decoder error into a client-safe message.
func syntaxError(err error) error {
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		return invalid("malformed JSON at byte %d", se.Offset)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return invalid("malformed JSON: the frame ends early")
	}
	return invalid("malformed JSON")
}

// Validate reports whether f is a known frame type with every field it needs, in range.
func (f Frame) Validate() error {
	if len(f.Ref) > maxRefLen || !utf8.ValidString(f.Ref) {
		return invalid("ref: at most %d characters of UTF-8", maxRefLen)
	}
	switch f.Type {
	case "":
		return invalid("type is required")
	case TypeLocation:
		if f.Lat == nil || f.Lng == nil {
			return invalid("location needs lat and lng")
		}
		if err := f.Point().Validate(); err != nil {
			return err
		}
		if h := f.Heading; h != nil && !(*h >= 0 && *h <= 360) {
			return invalid("heading %v is out of range [0, 360]", *h)
		}
		if s := f.Speed; s != nil && !(*s >= 0 && *s <= maxSpeed) {
			return invalid("speed %v is out of range [0, %d] m/s", *s, maxSpeed)
		}
	case TypeAvailable, TypeOffline:
	case TypeAccept, TypeDecline:
		if err := checkID("offer_id", f.OfferID, f.Type); err != nil {
			return err
		}
	case TypeArrived, TypeStart, TypeComplete:
		if err := checkID("ride_id", f.RideID, f.Type); err != nil {
			return err
		}
	default:
		return invalid("unknown frame type %q", clip(f.Type))
	}
	return nil
}

// Point is the position of a location frame.
func (f Frame) Point() dispatch.Point {
	var p dispatch.Point
	if f.Lat != nil {
		p.Lat = *f.Lat
	}
	if f.Lng != nil {
		p.Lng = *f.Lng
	}
	return p
}

// RefOr returns the ref that answers f: the client's ref (whole when valid), else the
// frame type.
func (f Frame) RefOr() string {
	if f.Ref != "" {
		return dispatch.Clip(f.Ref, maxRefLen)
	}
	return clip(f.Type)
}

func checkID(field, v, typ string) error {
	switch {
	case v == "":
		return invalid("%s needs %s", typ, field)
	case len(v) > maxIDLen || !utf8.ValidString(v):
		return invalid("%s: at most %d characters of UTF-8", field, maxIDLen)
	}
	return nil
}

func invalid(format string, args ...any) error {
	return dispatch.Errorf(dispatch.ECodeInvalid, format, args...)
}

// clip shortens a client-supplied string before it is echoed back.
func clip(s string) string { return dispatch.Clip(s, maxEcho) }

// Outbound frames. Each has the exact shape the contract gives its type.

// Welcome is the first frame of every connection: where the driver stands.
type Welcome struct {
	Type     string               `json:"type"`
	DriverID string               `json:"driver_id"`
	State    dispatch.DriverState `json:"state"`
	Ride     *Ride                `json:"ride"`    // the assigned ride (en_route, on_trip), else null
	Resumed  bool                 `json:"resumed"` // this connection took over a session kept through a drop
}

// Offer is a ride offered to the driver until ExpiresAt.
type Offer struct {
	Type      string         `json:"type"`
	OfferID   string         `json:"offer_id"`
	RideID    string         `json:"ride_id"`
	Pickup    dispatch.Point `json:"pickup"`
	Dropoff   dispatch.Point `json:"dropoff"`
	Fare      dispatch.Money `json:"fare"`
	ExpiresAt time.Time      `json:"expires_at"`
	// PickupDistanceM is the straight-line distance to the pickup when offered.
	PickupDistanceM float64 `json:"pickup_distance_m"`
}

// NewOffer is the offer frame of o.
func NewOffer(o dispatch.Offer) Offer {
	return Offer{
		Type: TypeOffer, OfferID: o.ID, RideID: o.RideID, Pickup: o.Pickup, Dropoff: o.Dropoff,
		Fare: o.Fare, ExpiresAt: o.ExpiresAt.UTC(), PickupDistanceM: o.PickupM,
	}
}

// Assigned tells the driver its accept won: the ride is theirs.
type Assigned struct {
	Type string `json:"type"`
	Ride Ride   `json:"ride"`
}

// OfferRevoked withdraws an offer: reason is expired, taken or cancelled.
type OfferRevoked struct {
	Type    string `json:"type"`
	OfferID string `json:"offer_id"`
	Reason  string `json:"reason"`
}

// RideCancelled tells the driver the rider cancelled its assigned ride.
type RideCancelled struct {
	Type   string `json:"type"`
	RideID string `json:"ride_id"`
	Ride   Ride   `json:"ride"` // extension: the cancelled ride
}

// Error refuses a frame. The socket stays open unless a close frame follows.
type Error struct {
	Type    string         `json:"type"`
	Code    dispatch.ECode `json:"code"`
	Message string         `json:"message"`
	Ref     string         `json:"ref,omitempty"`
}

// Reconnect tells the app to dial another region (url, same token) and resume there;
// the socket then closes with CloseReconnect.
type Reconnect struct {
	Type   string `json:"type"`
	Region string `json:"region"`
	URL    string `json:"url"`
	Reason string `json:"reason"`
}

// NewError is the error frame answering ref with err.
func NewError(err error, ref string) Error {
	return Error{Type: TypeError, Code: dispatch.ErrorCode(err), Message: dispatch.ErrorMessage(err), Ref: ref}
}

// Ack confirms that available, offline, decline (or a location carrying a ref) took
// effect. Extension.
type Ack struct {
	Type string `json:"type"`
	Ref  string `json:"ref"`
}

// RideUpdate answers arrived, start and complete with the ride as it is now. Extension.
type RideUpdate struct {
	Type string `json:"type"`
	Ride Ride   `json:"ride"`
	Ref  string `json:"ref"`
}

// State tells the driver the server changed its state on its own: today only
// offline, with reason missed_offers, after offers in a row expired unanswered. The
// app shows it and sends available when the driver is ready again. Extension.
type State struct {
	Type   string               `json:"type"`
	State  dispatch.DriverState `json:"state"`
	Reason string               `json:"reason"`
}

// Message is any server-to-driver frame, decoded; Type says which fields are set. Raw
// holds the frame as received.
type Message struct {
	Type string `json:"type"`

	DriverID string               `json:"driver_id,omitempty"` // welcome
	State    dispatch.DriverState `json:"state,omitempty"`     // welcome
	Resumed  bool                 `json:"resumed,omitempty"`   // welcome
	Ride     *Ride                `json:"ride,omitempty"`      // welcome, assigned, ride_cancelled, ride

	OfferID         string          `json:"offer_id,omitempty"` // offer, offer_revoked
	RideID          string          `json:"ride_id,omitempty"`  // offer, ride_cancelled
	Pickup          *dispatch.Point `json:"pickup,omitempty"`
	Dropoff         *dispatch.Point `json:"dropoff,omitempty"`
	Fare            *dispatch.Money `json:"fare,omitempty"`
	ExpiresAt       time.Time       `json:"expires_at,omitzero"`
	PickupDistanceM float64         `json:"pickup_distance_m,omitempty"`
	Reason          string          `json:"reason,omitempty"` // offer_revoked

	Code    dispatch.ECode `json:"code,omitempty"` // error
	Message string         `json:"message,omitempty"`
	Ref     string         `json:"ref,omitempty"` // error, ack, ride

	Raw json.RawMessage `json:"-"`
}

// DecodeMessage parses one server-to-driver frame.
func DecodeMessage(data []byte) (Message, error) {
	var m Message
	if err := json.Unmarshal(data, &m); err != nil {
		return Message{}, fmt.Errorf("decode server frame: %w", err)
	}
	if m.Type == "" {
		return Message{}, errors.New("decode server frame: no type")
	}
	m.Raw = append(json.RawMessage(nil), data...)
	return m, nil
}
