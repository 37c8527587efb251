package app

import (
	"cmp"
	"io"
	"net"
	"os"
	"time"

	"github.com/skyjoin/skyjoin/internal/auth"
)

// Cloud Run's contract with a container (K_SERVICE set): listen on
// 0.0.0.0:$PORT; SIGTERM, then SIGKILL 10 s later; stdout and stderr go
// to Cloud Logging, which parses each line that is a JSON object.
//
// With K_SERVICE set, every stage command therefore defaults to:
//   - --addr 0.0.0.0:$PORT ($PORT defaults to 8080), unless --addr or
//     SKYJOIN_ADDR is given;
//   - --shutdown-timeout 8s, so that the process has drained and exited
//     before the SIGKILL;
//   - logs as JSON on stdout (not stderr) and no banner or sampled records
//     on stdout: every line on stdout is one structured log entry;
//   - auth on, with Google ID tokens for the service's URL (auth.Config).
const (
	cloudRunShutdownTimeout = 8 * time.Second
	localShutdownTimeout    = 10 * time.Second
	localAddr               = "127.0.0.1:8080"
)

// defaultAddr is --addr's default: 0.0.0.0:$PORT on Cloud Run.
func defaultAddr() string {
	if !auth.OnCloudRun() {
		return localAddr
	}
	return net.JoinHostPort("0.0.0.0", cmp.Or(os.Getenv("PORT"), "8080"))
}

// defaultShutdownTimeout is --shutdown-timeout's default: within Cloud
// Run's 10 s between SIGTERM and SIGKILL.
func defaultShutdownTimeout() time.Duration {
	if auth.OnCloudRun() {
		return cloudRunShutdownTimeout
	}
	return localShutdownTimeout
}

// logOutput is where a stage command logs: stdout on Cloud Run (one JSON
// object a line, which Cloud Logging reads as a structured entry under the
// log run.googleapis.com/stdout), stderr elsewhere (stdout holds the
// banner for people and scripts).
func logOutput(stdout, stderr io.Writer) io.Writer {
	if auth.OnCloudRun() {
		return stdout
	}
	return stderr
}

// printsBanner reports whether the process writes its banner (and, with
// --demo, sampled records) to stdout: not on Cloud Run, where stdout is
// the structured log and the "skyjoin is up" entry says the same.
func printsBanner() bool { return !auth.OnCloudRun() }
