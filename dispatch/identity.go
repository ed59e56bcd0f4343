package dispatch

import (
	"errors"
	"fmt"
)

// Role is what a caller may do.
type Role string

// Roles carried in tokens.
const (
	RoleDriver Role = "driver"
	RoleRider  Role = "rider"
	RoleAdmin  Role = "admin"
)

// Valid reports whether r is one of the known roles.
func (r Role) Valid() bool { return r == RoleDriver || r == RoleRider || r == RoleAdmin }

// MaxSubjectLen bounds a caller's id (a token's sub). Ids end up in store keys, log
// subjects, frames and logs; a bound keeps each of those small whatever a token says.
const MaxSubjectLen = 128

// SubjectChars lists the characters an id may hold besides ASCII letters and digits:
// enough for UUIDs, ULIDs, e-mail-like and "provider|id" ids, and nothing that means
// something to a NATS subject, a Redis key pattern, a URL, a header or a log line.
const SubjectChars = "-_.:@|"

// Identity is who a verified token says the caller is.
type Identity struct {
	Subject string // the driver or rider id
	Role    Role
}

// Validate reports why id cannot be a caller: its subject must be 1 to MaxSubjectLen
// ASCII letters, digits or SubjectChars, and its role a known one.
func (id Identity) Validate() error {
	if err := ValidateSubject(id.Subject); err != nil {
		return err
	}
	if !id.Role.Valid() {
		return fmt.Errorf("role %.32q: want driver, rider or admin", string(id.Role))
	}
	return nil
}

// ValidateSubject reports why s cannot be a driver or rider id (see Identity.Validate).
func ValidateSubject(s string) error {
	switch {
	case s == "":
		return errors.New("sub is missing or empty")
	case len(s) > MaxSubjectLen:
		return fmt.Errorf("sub is %d bytes long: at most %d", len(s), MaxSubjectLen)
	}
	for i := 0; i < len(s); i++ {
		if !subjectChar(s[i]) {
			return fmt.Errorf("sub has a character other than ASCII letters, digits and %s at byte %d", SubjectChars, i)
		}
	}
	return nil
}

func subjectChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	for i := 0; i < len(SubjectChars); i++ {
		if c == SubjectChars[i] {
			return true
		}
	}
	return false
}

// Verifier checks a bearer token and returns its identity, or an *Error with code
// ECodeUnauthorized. It works offline, from keys the service holds. An identity it
// returns always passes Validate.
type Verifier interface {
	Verify(token string) (Identity, error)
}
