package dispatch

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

// Identity is who a verified token says the caller is.
type Identity struct {
	Subject string // the driver or rider id
	Role    Role
}

// Verifier checks a bearer token and returns its identity, or an *Error with code
// ECodeUnauthorized. It works offline, from keys the service holds.
type Verifier interface {
	Verify(token string) (Identity, error)
}
