// Package procs sets how many processors the Go scheduler runs goroutines
// on at once (GOMAXPROCS): from a flag, or the runtime's default plus
// what the process asks for.
package procs

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"
)

// Config is the processors a process asks for.
type Config struct {
	// N is GOMAXPROCS; 0: the runtime's default (the CPUs this process may
	// use: the machine's, or its container's CPU limit), plus the extra a
	// process's caller asks for (Apply).
	N int
}

// RegisterFlags registers --procs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.N, "procs", 0, "processors that run this process's goroutines at once (GOMAXPROCS); 0: the CPUs it may use (the machine's, or the container's CPU limit), plus one when it holds the embedded DuckDB store, so that the store's background work (compactions, calls into DuckDB) does not keep requests waiting for a processor (docs/architecture.md). GOMAXPROCS, if set, takes precedence")
}

// Validate checks N.
func (c Config) Validate() error {
	if c.N < 0 {
		return fmt.Errorf("procs must be 0 (the default) or more, got %d", c.N)
	}
	return nil
}

// Decide returns the processors to run with, and where the figure came
// from: "GOMAXPROCS" when env (the variable's value) is set, which the
// runtime has already applied, and the figure is current; "flag" for
// c.N; otherwise "default", def (the runtime's default) plus extra.
func Decide(c Config, env string, current, def, extra int) (int, string) {
	switch {
	case env != "":
		return current, "GOMAXPROCS"
	case c.N > 0:
		return c.N, "flag"
	default:
		return def + max(extra, 0), "default"
	}
}

// Apply sets GOMAXPROCS from c, with extra processors over the runtime's
// default when c leaves it to the default, and logs what it did when that
// is not the runtime's default. The GOMAXPROCS environment variable takes
// precedence. Where Apply leaves the default, the runtime keeps following
// the container's CPU limit; a figure set here stays as it is.
func Apply(c Config, extra int, log *slog.Logger) int {
	env := os.Getenv("GOMAXPROCS")
	if env == "" {
		// The default, as the runtime would have it now (and not what an
		// earlier Apply in this process set).
		runtime.SetDefaultGOMAXPROCS()
	}
	def := runtime.GOMAXPROCS(0)
	n, source := Decide(c, env, def, def, extra)
	if n != def {
		runtime.GOMAXPROCS(n)
	}
	if source != "default" || n != def {
		log.Info("processors", "gomaxprocs", n, "source", source, "cpus", runtime.NumCPU())
	}
	return n
}
