package app

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

// TestBenchUsage: bad bench flags are refused as usage errors naming the
// flag, before anything starts.
func TestBenchUsage(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--fill", "-5"}, "--fill -5"},
		{[]string{"--auth", "maybe"}, `--auth "maybe"`},
		{[]string{"--target", "http://127.0.0.1:1", "--admin", "http://127.0.0.1:2", "--fill", "10"}, "--fill and --data-dir"},
		{[]string{"--admin", "http://127.0.0.1:2"}, "--admin goes with --target"},
		{[]string{"--phases", "ingest,warp"}, `unknown phase "warp"`},
		{[]string{"--phases", ""}, "names no phase"},
		{[]string{"--phases", "none,ingest"}, "none goes alone"},
		{[]string{"--phases", "none"}, "needs --fill and --data-dir"},
		{[]string{"--phases", "none", "--fill", "10"}, "needs --fill and --data-dir"},
	} {
		err := runBench(context.Background(), tt.args, io.Discard, io.Discard)
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("bench %v: %v, want a usage error naming %s", tt.args, err, tt.want)
		}
	}
}
