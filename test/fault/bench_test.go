package fault

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestBenchStopsWhenItsSkyjoinExits: `skyjoin bench` ends its run, with
// an error naming the exit, when the skyjoin up it started exits (here
// killed by a failpoint after its third store write), rather than measure
// a dead target until the phase ends (ten minutes). The run is bounded by
// the test's own two minutes.
func TestBenchStopsWhenItsSkyjoinExits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "bench", "--auth", "off", "--phases", "pipeline", "--pipeline", "10m")
	cmd.Env = append(os.Environ(), "SKYJOIN_FAILPOINT=enrich-after-store:3")
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("skyjoin bench still ran 2 minutes after its skyjoin up was killed; output:\n%s", tail(out))
	}
	if err == nil || !strings.Contains(string(out), "exited during the run (signal: killed)") {
		t.Fatalf("skyjoin bench: %v; want an error naming its skyjoin up's exit; output:\n%s", err, tail(out))
	}
}

func tail(b []byte) string {
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}
