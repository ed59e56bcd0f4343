package dispatch

import (
	"strings"
	"unicode/utf8"
)

// Clip shortens s, a client's input about to be quoted back in an error message, to
// at most n bytes of valid UTF-8: bytes that are not UTF-8 become U+FFFD, and a string
// still longer than n is cut at a character boundary and ends in "…" (within the n).
func Clip(s string, n int) string {
	if len(s) <= n && utf8.ValidString(s) {
		return s
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	const ellipsis = "…"
	cut := max(n-len(ellipsis), 0)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}
