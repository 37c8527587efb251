//go:build !noduckdb && unix

package duckdb

import "syscall"

// openFilesLimit is the process's limit of open files (Go raises its soft
// limit to the hard one at start), or 0 if unknown.
func openFilesLimit() uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0
	}
	return l.Cur
}
