package driver_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/driver"
)

func TestDecodeFrame(t *testing.T) {
	for _, c := range []struct {
		in      string
		wantErr string // substring of the message; "" for a valid frame
	}{
		{`{"type":"location","lat":37.5,"lng":127.0,"heading":90,"speed":12.5,"ts":"2025-01-02T03:04:05Z"}`, ""},
		{`{"type":"location","lat":-90,"lng":180}`, ""},
		{`{"type":"available","ref":"r-1"}`, ""},
		{`{"type":"offline","extra":"ignored"}`, ""},
		{`{"type":"accept","offer_id":"o_1"}`, ""},
		{`{"type":"decline","offer_id":"o_1"}`, ""},
		{`{"type":"arrived","ride_id":"r_1"}`, ""},
		{`{"type":"start","ride_id":"r_1"}`, ""},
		{`{"type":"complete","ride_id":"r_1"}`, ""},
		{``, "malformed JSON"},
		{`{`, "malformed JSON"},
		{`{"type":"location"} trailing`, "malformed JSON"},
		{`null`, "JSON object, not null"},
		{`"location"`, "JSON object"},
		{`[]`, "JSON object"},
		{`{}`, "type is required"},
		{`{"type":7}`, "field type: want a string"},
		{`{"type":"fly"}`, `unknown frame type "fly"`},
		{`{"type":"location","lat":91,"lng":0}`, "latitude 91 is out of range"},
		{`{"type":"location","lat":0,"lng":180.5}`, "longitude 180.5 is out of range"},
		{`{"type":"location","lat":0}`, "needs lat and lng"},
		{`{"type":"location","lat":null,"lng":1}`, "needs lat and lng"},
		{`{"type":"location","lat":"1","lng":1}`, "field lat: want a number"},
		{`{"type":"location","lat":1,"lng":1,"heading":-1}`, "heading"},
		{`{"type":"location","lat":1,"lng":1,"speed":1e9}`, "speed"},
		{`{"type":"location","lat":1,"lng":1,"ts":"noon"}`, "RFC 3339"},
		{`{"type":"location","lat":1e999,"lng":1}`, "field lat: number out of range"},
		{`{"type":"accept"}`, "accept needs offer_id"},
		{`{"type":"accept","offer_id":""}`, "accept needs offer_id"},
		{`{"type":"decline","offer_id":"` + strings.Repeat("o", 200) + `"}`, "at most 128"},
		{`{"type":"start"}`, "start needs ride_id"},
		{`{"type":"available","ref":"` + strings.Repeat("r", 200) + `"}`, "ref"},
		{`{"type":"offline","extra":{"nested":[1,{"a":2}]},"more":null}`, ""},
		{`{"type":"location","lat":1,"lat":2,"lng":3}`, `duplicate field "lat"`},
		{`{"type":"accept","type":"decline","offer_id":"o_1"}`, `duplicate field "type"`},
		{`{"type":"offline","x":1,"x":2}`, `duplicate field "x"`},
		{`{"type":"location","lat":1,"lng":1,"ts":5}`, "field ts: want a string, got a number"},
		{`{"type":"location","lat":{"a":1},"lng":1}`, "field lat: want a number, got an object"},
		{`{"type":"accept","offer_id":["o_1"]}`, "field offer_id: want a string, got an array"},
		{`{"type":"available","ref":true}`, "field ref: want a string, got a boolean"},
		{`{"type":"location","lat":"1","lng":1}`, "field lat: want a number, got a string"},
	} {
		f, err := driver.DecodeFrame([]byte(c.in))
		if c.wantErr == "" {
			if err != nil {
				t.Errorf("%s: %v", c.in, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("%s: err %v, want one mentioning %q", c.in, err, c.wantErr)
			continue
		}
		if code := dispatch.ErrorCode(err); code != dispatch.ECodeInvalid {
			t.Errorf("%s: code %s, want invalid", c.in, code)
		}
		_ = f
	}
}

func TestErrorRefEchoesClip(t *testing.T) {
	f, err := driver.DecodeFrame([]byte(`{"type":"` + strings.Repeat("z", 500) + `"}`))
	if err == nil || len(err.Error()) > 200 || len(f.RefOr()) > 64 {
		t.Fatalf("a 500-byte type is echoed at length %d (ref %d)", len(err.Error()), len(f.RefOr()))
	}
}

// TestOutboundShapes pins the JSON of the server's frames to the contract's fields.
func TestOutboundShapes(t *testing.T) {
	at := time.Date(2025, 3, 4, 5, 6, 7, 0, time.FixedZone("KST", 9*3600))
	loc := dispatch.Point{Lat: 1, Lng: 2}
	ride := dispatch.Ride{ID: "r_1", RiderID: "u-1", Status: dispatch.RideMatched, DriverID: "d-1",
		Fare: dispatch.Money{Amount: 4800, Currency: "KRW"}, CreatedAt: at, UpdatedAt: at, Declined: []string{"d-9"}}
	for _, c := range []struct {
		v    any
		want string
	}{
		{driver.NewOffer(dispatch.Offer{ID: "o_1", RideID: "r_1", Fare: ride.Fare, ExpiresAt: at, PickupM: 120}),
			`{"type":"offer","offer_id":"o_1","ride_id":"r_1","pickup":{"lat":0,"lng":0},"dropoff":{"lat":0,"lng":0},"fare":{"amount":4800,"currency":"KRW"},"expires_at":"2025-03-03T20:06:07Z","pickup_distance_m":120}`},
		{driver.Welcome{Type: "welcome", DriverID: "d-1", State: dispatch.DriverOffline},
			`{"type":"welcome","driver_id":"d-1","state":"offline","ride":null,"resumed":false}`},
		{driver.Assigned{Type: "assigned", Ride: driver.NewRide(ride, &loc)},
			`{"type":"assigned","ride":{"id":"r_1","rider_id":"u-1","status":"matched","pickup":{"lat":0,"lng":0},"dropoff":{"lat":0,"lng":0},"driver":{"id":"d-1","location":{"lat":1,"lng":2}},"fare":{"amount":4800,"currency":"KRW"},"created_at":"2025-03-03T20:06:07Z","updated_at":"2025-03-03T20:06:07Z"}}`},
		{driver.NewRide(dispatch.Ride{ID: "r_2", Status: dispatch.RideSearching}, nil),
			`{"id":"r_2","rider_id":"","status":"searching","pickup":{"lat":0,"lng":0},"dropoff":{"lat":0,"lng":0},"driver":null,"fare":{"amount":0,"currency":""},"created_at":"0001-01-01T00:00:00Z","updated_at":"0001-01-01T00:00:00Z"}`},
		{driver.OfferRevoked{Type: "offer_revoked", OfferID: "o_1", Reason: "taken"},
			`{"type":"offer_revoked","offer_id":"o_1","reason":"taken"}`},
		{driver.NewError(dispatch.ErrOfferExpired, "a1"),
			`{"type":"error","code":"conflict","message":"offer is no longer valid","ref":"a1"}`},
		{driver.NewError(errors.New("redis: connection refused"), ""),
			`{"type":"error","code":"internal","message":"internal error"}`},
	} {
		b, err := json.Marshal(c.v)
		if err != nil || string(b) != c.want {
			t.Errorf("%T:\n got %s %v\nwant %s", c.v, b, err, c.want)
		}
	}
}

// FuzzDecodeFrame: decoding never panics, refuses only with code invalid, and a frame it
// accepts survives a round trip unchanged.
func FuzzDecodeFrame(f *testing.F) {
	for _, seed := range []string{
		`{"type":"location","lat":37.5665,"lng":126.978,"heading":90,"speed":8.3,"ts":"2025-01-02T03:04:05.123+09:00"}`,
		`{"type":"available"}`,
		`{"type":"offline","ref":"x"}`,
		`{"type":"accept","offer_id":"o_abc","ref":"a1"}`,
		`{"type":"decline","offer_id":"o_abc"}`,
		`{"type":"arrived","ride_id":"r_abc"}`,
		`{"type":"start","ride_id":"r_abc"}`,
		`{"type":"complete","ride_id":"r_abc"}`,
		`{"type":"location","lat":91,"lng":0}`,
		`{"type":"location","lat":-0,"lng":-180}`,
		`{"type":"teleport"}`,
		`{"type":"accept"}`,
		`{"type":"location","lat":"1","lng":1}`,
		`{"type":"location","lat":1,"lng":1,"ts":"2025-13-01T00:00:00Z"}`,
		`{"type":"\u00e9\ud800"}`,
		`{"type":"available","type":"offline"}`,
		`{"type":"offline","x":{"y":[1,{"z":null}]}}`,
		`{"type":"location","lat":1,"lng":2,"ts":7}`,
		`[]`, `null`, `{`, ``, "\xff\xfe", `{"type":"accept","offer_id":"\u0000"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := driver.DecodeFrame(data)
		if err != nil {
			if code := dispatch.ErrorCode(err); code != dispatch.ECodeInvalid {
				t.Fatalf("DecodeFrame(%q): code %s, want invalid", data, code)
			}
			if len(err.Error()) > 300 {
				t.Fatalf("DecodeFrame(%q): a %d-byte message echoes too much", data, len(err.Error()))
			}
			return
		}
		if err := fr.Validate(); err != nil {
			t.Fatalf("decoded frame does not validate: %v", err)
		}
		b, err := json.Marshal(fr)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", fr, err)
		}
		again, err := driver.DecodeFrame(b)
		if err != nil {
			t.Fatalf("round trip of %q (as %s): %v", data, b, err)
		}
		if !reflect.DeepEqual(normalize(fr), normalize(again)) {
			t.Fatalf("round trip changed the frame:\n%+v\n%+v", fr, again)
		}
	})
}

// normalize drops the monotonic and zone detail of ts, which JSON does not carry.
func normalize(f driver.Frame) driver.Frame {
	if f.TS != nil {
		ts := f.TS.UTC()
		f.TS = &ts
	}
	return f
}
