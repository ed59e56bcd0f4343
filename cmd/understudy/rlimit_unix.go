//go:build unix

package main

import "syscall"

// openFilesLimit is the process's limit on open files (Go raises the soft limit to the
// hard one at start-up), or 0 if it cannot be read.
func openFilesLimit() uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0
	}
	return uint64(l.Cur)
}
