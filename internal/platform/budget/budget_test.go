package budget

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

func TestMemoryBudget(t *testing.T) {
	limited := func() (uint64, error) { return 512 << 20, nil }
	broken := func() (uint64, error) { return 0, errors.New("mountinfo unreadable") }
	for _, tc := range []struct {
		limit      string
		cgroup     func() (uint64, error)
		want       int64
		wantSource string
		wantErr    bool
	}{
		{"", limited, 512 << 20, "cgroup", false},
		{"", func() (uint64, error) { return 0, memlimit.ErrNoLimit }, 0, "", false},
		{"", func() (uint64, error) { return 0, memlimit.ErrNoCgroup }, 0, "", false},
		{"", func() (uint64, error) { return math.MaxUint64, nil }, 0, "", false},
		{"", broken, 0, "", true},
		{"off", limited, 0, "", false},
		{"1GiB", limited, 1 << 30, "flag", false},
		{"400MB", broken, 400e6, "flag", false},
		{"many", limited, 0, "", true},
	} {
		got, source, err := Config{Limit: tc.limit}.budget(tc.cgroup)
		if got != tc.want || source != tc.wantSource || (err != nil) != tc.wantErr {
			t.Errorf("budget(%q) = %d, %q, %v; want %d, %q, error %v", tc.limit, got, source, err, tc.want, tc.wantSource, tc.wantErr)
		}
	}
	if err := (Config{Limit: "many"}).Validate(); err == nil || !strings.Contains(err.Error(), "memory-limit") {
		t.Errorf("Validate(many) = %v, want an error naming memory-limit", err)
	}
}

func TestGoLimit(t *testing.T) {
	n, err := GoLimit(1<<30, 256e6)
	if want := int64(1<<30 - 256e6 - (1<<30)/10); err != nil || n != want {
		t.Errorf("GoLimit(1GiB, 256MB) = %d, %v; want %d", n, err, want)
	}
	if n, err := GoLimit(300<<20, 256e6); err == nil {
		t.Errorf("GoLimit(300MiB, 256MB) = %d, want an error: it leaves the Go heap under 64 MiB", n)
	}
	// A budget below what is bounded elsewhere: the error says the heap
	// gets nothing, and the least budget it names is enough, one MiB less
	// is not.
	_, err = GoLimit(100<<20, 256e6)
	if err == nil || !strings.Contains(err.Error(), "leave the Go heap nothing") {
		t.Fatalf("GoLimit(100MiB, 256MB) = %v, want an error saying the Go heap gets nothing", err)
	}
	_, least, ok := strings.Cut(err.Error(), "give at least ")
	var mib int64
	if _, serr := fmt.Sscanf(least, "%d MiB", &mib); !ok || serr != nil {
		t.Fatalf("GoLimit(100MiB, 256MB) = %v, want it to name the least budget", err)
	}
	if _, err := GoLimit(mib<<20, 256e6); err != nil {
		t.Errorf("GoLimit(%d MiB, 256MB), the budget the error named: %v", mib, err)
	}
	if _, err := GoLimit((mib-1)<<20, 256e6); err == nil {
		t.Errorf("GoLimit(%d MiB, 256MB) is accepted: the error named %d MiB, more than needed", mib-1, mib)
	}
}

// TestApply sets the runtime's soft limit from the flag, leaves
// it to GOMEMLIMIT when that is set, and refuses a flag too small.
func TestApply(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	t.Setenv("GOMEMLIMIT", "")

	if err := Apply(Config{Limit: "1GiB"}, 256<<20, log); err != nil {
		t.Fatal(err)
	}
	if got, want := debug.SetMemoryLimit(-1), int64(1<<30-256<<20-(1<<30)/10); got != want {
		t.Errorf("soft limit %d, want %d", got, want)
	}
	if err := Apply(Config{Limit: "200MiB"}, 256<<20, log); err == nil {
		t.Error("a budget smaller than DuckDB's limit was taken")
	}
	debug.SetMemoryLimit(before)
	if err := Apply(Config{Limit: "off"}, 256<<20, log); err != nil || debug.SetMemoryLimit(-1) != before {
		t.Errorf("off: %v, soft limit %d, want it left at %d", err, debug.SetMemoryLimit(-1), before)
	}
	t.Setenv("GOMEMLIMIT", "3GiB")
	if err := Apply(Config{Limit: "1GiB"}, 0, log); err != nil || debug.SetMemoryLimit(-1) != before {
		t.Errorf("with GOMEMLIMIT set: %v, soft limit %d, want it left at %d", err, debug.SetMemoryLimit(-1), before)
	}
}

// TestApplyHint: a budget too small for what is bounded elsewhere gets the
// caller's hint, with the budget, in the flag's error and in the warning
// for a container's limit, which leaves the soft limit alone.
func TestApplyHint(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	t.Setenv("GOMEMLIMIT", "")
	var logged strings.Builder
	log := slog.New(slog.NewTextHandler(&logged, nil))
	hint := func(b int64) string { return fmt.Sprintf("lower X for %d MiB", b>>20) }

	err := Config{Limit: "300MiB"}.apply(512<<20, hint, log, nil)
	if err == nil || !strings.Contains(err.Error(), "lower X for 300 MiB") {
		t.Errorf("the flag's 300 MiB with 512 MiB elsewhere: %v; want the hint with the budget", err)
	}
	container := func() (uint64, error) { return 300 << 20, nil }
	if err := (Config{}).apply(512<<20, hint, log, container); err != nil {
		t.Errorf("a container's limit too small is an error: %v; want a warning", err)
	}
	if !strings.Contains(logged.String(), "lower X for 300 MiB") {
		t.Errorf("the warning %q does not carry the hint", logged.String())
	}
	if got := debug.SetMemoryLimit(-1); got != before {
		t.Errorf("soft limit %d after a budget too small, want it left at %d", got, before)
	}
	if err := (Config{Limit: "1GiB"}).apply(256<<20, func(int64) string { t.Error("hint asked for a budget that fits"); return "" }, log, nil); err != nil {
		t.Error(err)
	}
}
