// Package subject turns ids into NATS subject tokens for the NATS adapters (natslog,
// natsbus), so that no id, however long or strange, can make a subject that is
// invalid, matches more than itself, or is over the server's control line limit (a
// protocol error after which the client closes its connection for good).
package subject

import (
	"crypto/sha256"
	"encoding/hex"
)

// MaxToken bounds a token Token returns: long enough that every id a token may carry
// (dispatch.MaxSubjectLen bytes, any allowed character) keeps the hex form it has
// always had, short enough that a subject of a few tokens stays far below the 4 KiB
// control line of a default NATS server.
const MaxToken = 512

// Token makes id one valid subject token, the same for the same id:
//   - ids of ASCII letters, digits, - and _ stay as they are (the usual case: d-42, r_abc);
//   - other ids are ~ and their bytes in hex (the empty id is ~);
//   - what would then be longer than MaxToken is ~h and the hex SHA-256 of the id.
//
// The first two forms are what the ledger and the ride log have always used, so
// records written before keep their subjects. The forms cannot collide: hex has no h,
// and plain ids have no ~.
func Token(id string) string {
	if plain(id) && len(id) <= MaxToken {
		return id
	}
	if 1+2*len(id) <= MaxToken {
		return "~" + hex.EncodeToString([]byte(id))
	}
	sum := sha256.Sum256([]byte(id))
	return "~h" + hex.EncodeToString(sum[:])
}

func plain(id string) bool {
	if id == "" {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
