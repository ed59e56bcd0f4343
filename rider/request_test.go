package rider

import (
	"math"
	"strings"
	"testing"

	"github.com/understudy/understudy/dispatch"
)

func TestDecodeRideRequest(t *testing.T) {
	q, err := DecodeRideRequest([]byte(` {"dropoff":{"lng":-0,"lat":-33.5},"pickup":{"lat":37.5665,"lng":126.978}} `))
	if err != nil {
		t.Fatal(err)
	}
	want := RideRequest{Pickup: dispatch.Point{Lat: 37.5665, Lng: 126.978}, Dropoff: dispatch.Point{Lat: -33.5}}
	if q != want || math.Signbit(q.Dropoff.Lng) {
		t.Fatalf("decoded %+v, want %+v (and -0 as 0)", q, want)
	}
	for _, c := range []struct{ body, want string }{
		{``, "empty"},
		{`{"pickup":{"lat":1,"lng":2}}`, "dropoff is required"},
		{`{"pickup":{"lat":1},"dropoff":{"lat":1,"lng":2}}`, "pickup.lng is required"},
		{`{"pickup":{"lat":"1","lng":2},"dropoff":{"lat":1,"lng":2}}`, "pickup.lat: want a number, got a string"},
		{`{"pickup":{"lat":1,"lng":2},"dropoff":{"lat":1,"lng":2},"x":1}`, `unknown field "x"`},
		{`{"pickup":{"lat":1,"lng":2,"lng":3},"dropoff":{"lat":1,"lng":2}}`, `duplicate field "pickup.lng"`},
		{`{"pickup":{"lat":100,"lng":2},"dropoff":{"lat":1,"lng":2}}`, "pickup: latitude 100 is out of range"},
		{`{"pickup":{"lat":1,"lng":2},"dropoff":{"lat":1,"lng":2}} x`, "after the JSON object"},
		{`{"pickup":{"lat":1,"lng":2},"dropoff":{"lat":1,"lng":2`, "unexpected end"},
		{`{"pickup" {"lat":1}}`, "malformed JSON"},
	} {
		_, err := DecodeRideRequest([]byte(c.body))
		if dispatch.ErrorCode(err) != dispatch.ECodeInvalid || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an invalid error mentioning %q", c.body, err, c.want)
		}
	}
}

func TestFingerprintIgnoresSpellingNotMeaning(t *testing.T) {
	a, _ := DecodeRideRequest([]byte(`{"pickup":{"lat":1.50,"lng":2},"dropoff":{"lat":3,"lng":4e0}}`))
	b, _ := DecodeRideRequest([]byte(`{"dropoff":{"lng":4,"lat":3},"pickup":{"lng":2.0,"lat":15e-1}}`))
	c, _ := DecodeRideRequest([]byte(`{"pickup":{"lat":1.5,"lng":2},"dropoff":{"lat":3,"lng":4.000001}}`))
	fa, fb, fc := fingerprint("POST", "/v1/rides", "u-1", a), fingerprint("POST", "/v1/rides", "u-1", b), fingerprint("POST", "/v1/rides", "u-1", c)
	if fa != fb || fa == fc || len(fa) != 64 {
		t.Fatalf("fingerprints %s %s %s: want the first two equal, the third different", fa, fb, fc)
	}
	if fingerprint("POST", "/v1/rides", "u-2", a) == fa {
		t.Fatal("the rider is not part of the fingerprint")
	}
}

// FuzzDecodeRideRequest: the decoder never panics, refuses with code invalid, and what
// it accepts is in range and survives a round trip through its canonical form.
func FuzzDecodeRideRequest(f *testing.F) {
	for _, seed := range []string{
		`{"pickup":{"lat":37.5665,"lng":126.978},"dropoff":{"lat":37.5512,"lng":126.9882}}`,
		`{"dropoff":{"lng":-180,"lat":-90},"pickup":{"lng":180,"lat":90}}`,
		`{"pickup":{"lat":-0,"lng":1e-300},"dropoff":{"lat":0.1,"lng":2E1}}`,
		`{"pickup":{"lat":1e400,"lng":0},"dropoff":{"lat":0,"lng":0}}`,
		`{"pickup":{"lat":null,"lng":0},"dropoff":{"lat":0,"lng":0}}`,
		`{"pickup":[1,2],"dropoff":{}}`,
		`{"pickup":{"lat":1,"lng":2},"pickup":{"lat":1,"lng":2}}`,
		`{"pickup":{"lat":"1","lng":true}}`,
		`{"a":{"b":{"c":[[[[[[[]]]]]]]}}}`,
		`[{"pickup":1}]`, `"text"`, `null`, `123`, ``, `{`, `{}`, `}{`,
		"{\"pickup\":{\"lat\":1,\"lng\":2},\"dropoff\":{\"lat\":1,\"lng\":2}}\x00",
		"{\"pick\xffup\":1}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		q, err := DecodeRideRequest(body)
		if err != nil {
			if code := dispatch.ErrorCode(err); code != dispatch.ECodeInvalid {
				t.Fatalf("error %v has code %s, want invalid", err, code)
			}
			return
		}
		if q.Pickup.Validate() != nil || q.Dropoff.Validate() != nil {
			t.Fatalf("accepted out-of-range %+v", q)
		}
		again, err := DecodeRideRequest(q.canonical())
		if err != nil || again != q {
			t.Fatalf("canonical form %s decodes to %+v, %v; want %+v", q.canonical(), again, err, q)
		}
	})
}
