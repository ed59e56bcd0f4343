package subject_test

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/understudy/understudy/dispatch/internal/subject"
)

func TestToken(t *testing.T) {
	long := strings.Repeat("d", 5<<10)
	for _, c := range []struct{ id, want string }{
		// The forms the ledger and the ride log have always used.
		{"d-42", "d-42"},
		{"r_abc", "r_abc"},
		{"01J9ZQ7Y0V5W8A0F2B3C4D5E6F", "01J9ZQ7Y0V5W8A0F2B3C4D5E6F"},
		{"", "~"},
		{"d.2*>", "~642e322a3e"},
		{"운전자", "~ec9ab4eca084ec9e90"},
		{"auth0|u@x.y", "~61757468307c7540782e79"},
		{strings.Repeat("d", 512), strings.Repeat("d", 512)},
		{strings.Repeat(".", 255), "~" + strings.Repeat("2e", 255)},
		// Longer than that: a hash.
		{strings.Repeat("d", 513), hashed(strings.Repeat("d", 513))},
		{strings.Repeat(".", 256), hashed(strings.Repeat(".", 256))},
		{long, hashed(long)},
	} {
		if got := subject.Token(c.id); got != c.want {
			t.Errorf("Token(%.40q, %d bytes) = %q, want %q", c.id, len(c.id), got, c.want)
		}
	}
}

func hashed(id string) string {
	sum := sha256.Sum256([]byte(id))
	return "~h" + hex.EncodeToString(sum[:])
}

func FuzzToken(f *testing.F) {
	for _, s := range []string{"d-42", "", "d.*>", "a b\r\n", strings.Repeat("x", 600), "~", "~h00"} {
		f.Add(s)
	}
	seen := map[string]string{}
	f.Fuzz(func(t *testing.T, id string) {
		tok := subject.Token(id)
		if tok == "" || len(tok) > subject.MaxToken {
			t.Fatalf("Token(%q) = %q: empty or over %d", id, tok, subject.MaxToken)
		}
		for i := 0; i < len(tok); i++ {
			c := tok[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '~') {
				t.Fatalf("Token(%q) = %q: byte %q is not a safe subject character", id, tok, c)
			}
		}
		if other, ok := seen[tok]; ok && other != id {
			t.Fatalf("Token(%q) = Token(%q) = %q", id, other, tok)
		}
		seen[tok] = id
	})
}
