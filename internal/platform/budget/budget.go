// Package budget is a process's memory budget: the Go heap's soft limit
// from a flag or the container's memory limit.
package budget

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"

	"github.com/KimMachineGun/automemlimit/memlimit"

	"github.com/skyjoin/skyjoin/internal/platform"
)

// Config is the memory a process may use: its budget, from which the
// Go runtime's soft memory limit is set (runtime/debug.SetMemoryLimit), so
// that the garbage collector works harder, rather than the process being
// killed, as the heap nears what is left of the budget.
type Config struct {
	// Limit is the budget: a size (ParseBytes), "off", or empty for the
	// memory limit of the process's container (its cgroup), if it has one.
	Limit string
}

// RegisterFlags registers --memory-limit.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Limit, "memory-limit", "", "memory this process may use, e.g. 512MiB: the Go heap's soft limit is set to it, less twice the embedded DuckDB store's memory limit and a tenth for the rest; empty: the container's memory limit (cgroup), if any; off: none. GOMEMLIMIT, if set, takes precedence for the Go heap")
}

// Validate checks the limit's form.
func (c Config) Validate() error {
	if c.Limit == "" || c.Limit == "off" {
		return nil
	}
	if _, err := platform.ParseBytes(c.Limit); err != nil {
		return fmt.Errorf("memory-limit %w", err)
	}
	return nil
}

// Budget returns the budget in bytes, and where it came from: "flag",
// "cgroup", or "" with 0 for none.
func (c Config) Budget() (int64, string, error) {
	return c.budget(memlimit.FromCgroup)
}

func (c Config) budget(cgroup func() (uint64, error)) (int64, string, error) {
	switch c.Limit {
	case "off":
		return 0, "", nil
	case "":
		n, err := cgroup()
		switch {
		case err == nil && n > 0 && n < 1<<62:
			return int64(n), "cgroup", nil
		case err == nil, errors.Is(err, memlimit.ErrNoLimit), errors.Is(err, memlimit.ErrNoCgroup), errors.Is(err, memlimit.ErrCgroupsNotSupported):
			return 0, "", nil
		default:
			return 0, "", fmt.Errorf("memory limit of the container: %w", err)
		}
	}
	n, err := platform.ParseBytes(c.Limit)
	if err != nil {
		return 0, "", fmt.Errorf("memory-limit %w", err)
	}
	return n, "flag", nil
}

// MinGoLimit is the least soft limit a budget may leave the Go heap.
const MinGoLimit = 64 << 20

// GoLimit is the Go heap's share of budget: what outside (memory bounded
// elsewhere, such as DuckDB's memory limit) and a reserve of a tenth of the
// budget (memory no limit accounts for: C allocations, thread stacks,
// the page cache of mapped files) leave. It is an error when that is less
// than 64 MiB.
func GoLimit(budget, outside int64) (int64, error) {
	n := budget - outside - budget/10
	if n < MinGoLimit {
		return 0, fmt.Errorf("a memory budget of %d MiB is too small: %d MiB bounded elsewhere (the store's memory) and a tenth in reserve leave the Go heap %s, and it needs at least %d MiB: give at least %d MiB or lower the other limits",
			budget>>20, outside>>20, heapShare(n), MinGoLimit>>20, (outside+MinGoLimit)*10/9>>20+1)
	}
	return n, nil
}

// heapShare writes the Go heap's share of a budget, which may be none.
func heapShare(n int64) string {
	if n <= 0 {
		return "nothing"
	}
	return fmt.Sprintf("%d MiB", n>>20)
}

// Apply sets the Go runtime's soft memory limit from c, less
// outside bytes bounded elsewhere, and logs what it did. GOMEMLIMIT in the
// environment takes precedence (the runtime already applied it). A budget
// too small is an error when the flag gave it; from the container, it is
// logged, and the Go heap left unlimited.
func Apply(c Config, outside int64, log *slog.Logger) error {
	return ApplyWithHint(c, outside, nil, log)
}

// ApplyWithHint is Apply that, when the budget is too small, adds
// hint(budget) to the error or the warning: what to change, which the
// caller that knows the memory bounded elsewhere can say.
func ApplyWithHint(c Config, outside int64, hint func(budget int64) string, log *slog.Logger) error {
	return c.apply(outside, hint, log, memlimit.FromCgroup)
}

// apply is ApplyWithHint with the container's limit read by cgroup.
func (c Config) apply(outside int64, hint func(budget int64) string, log *slog.Logger, cgroup func() (uint64, error)) error {
	budget, source, err := c.budget(cgroup)
	if err != nil {
		if c.Limit != "" {
			return err
		}
		// Not knowing the container's limit is no reason not to start.
		log.Warn("memory budget: cannot read the container's memory limit; the Go heap has no soft limit", "error", err.Error())
		return nil
	}
	if budget == 0 {
		return nil
	}
	if v := os.Getenv("GOMEMLIMIT"); v != "" {
		log.Info("memory budget: GOMEMLIMIT is set, and sets the Go heap's soft limit", "budget_bytes", budget, "source", source, "GOMEMLIMIT", v)
		return nil
	}
	n, err := GoLimit(budget, outside)
	if err != nil {
		if hint != nil {
			err = fmt.Errorf("%w; %s", err, hint(budget))
		}
		if source == "flag" {
			return err
		}
		log.Warn("memory budget of the container too small to set a soft limit for the Go heap", "error", err.Error())
		return nil
	}
	debug.SetMemoryLimit(n)
	log.Info("memory budget", "budget_bytes", budget, "source", source, "go_soft_limit_bytes", n, "outside_bytes", outside)
	return nil
}
