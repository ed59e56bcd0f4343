package dispatch

import "encoding/json"

// JSONKind names the JSON type of a token from json.Decoder.Token, for the messages
// of the strict decoders (the rider API's bodies, the driver socket's frames): "a
// string", "an object", "null".
func JSONKind(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		if v == '[' {
			return "an array"
		}
		return "an object"
	case string:
		return "a string"
	case json.Number, float64:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return "another type"
}
