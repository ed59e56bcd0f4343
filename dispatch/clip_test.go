package dispatch_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/understudy/understudy/dispatch"
)

func TestClip(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"application/json", 64, "application/json"},
		{strings.Repeat("a", 64), 64, strings.Repeat("a", 64)},
		{strings.Repeat("a", 65), 64, strings.Repeat("a", 61) + "…"},
		// Hangul is 3 bytes a character: the cut falls inside one and moves back to its start.
		{"드라이버", 8, "드…"},
		{"드라이버", 12, "드라이버"},
		{strings.Repeat("a", 60) + "드라이버", 64, strings.Repeat("a", 60) + "…"},
		{"ab" + "\xe2\x80", 16, "ab\uFFFD"},                    // a character cut short by the client
		{"\xff\xfe" + strings.Repeat("z", 20), 8, "\uFFFDzz…"}, // one U+FFFD for the run
		{"", 8, ""},
	} {
		got := dispatch.Clip(c.in, c.n)
		if got != c.want {
			t.Errorf("Clip(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
		if !utf8.ValidString(got) || len(got) > c.n {
			t.Errorf("Clip(%q, %d) = %q: %d bytes, valid UTF-8 %v", c.in, c.n, got, len(got), utf8.ValidString(got))
		}
	}
}
