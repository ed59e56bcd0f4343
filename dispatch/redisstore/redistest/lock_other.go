//go:build !unix

package redistest

import "errors"

// tryLock is not implemented here: REDIS_URL needs a Unix system to share one Redis
// among parallel tests; without REDIS_URL each test starts its own redis-server.
func tryLock(string) (func(), error) {
	return nil, errors.New("REDIS_URL is supported on Unix systems only: unset it to start a redis-server per test")
}
