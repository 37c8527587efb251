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
	"strconv"
)

// Config is the processors a process asks for.
type Config struct {
	// N is GOMAXPROCS; 0: the runtime's default, plus the extra a process
	// asks for (Apply).
	N int
}

// RegisterFlags registers --procs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.N, "procs", 0, "how many OS threads run this process's Go code at once (GOMAXPROCS); 0: the Go runtime's default (the CPUs it may use; in a container with a CPU limit, the limit rounded up, at least 2), plus one in a server process that opens the embedded DuckDB store and has no CPU limit below its CPUs, so that the store's background work (compactions, calls into DuckDB) does not keep requests waiting (docs/architecture.md). The GOMAXPROCS environment variable, if set, overrides --procs and the extra one")
}

// Validate checks N.
func (c Config) Validate() error {
	if c.N < 0 {
		return fmt.Errorf("procs must be 0 (the default) or more, got %d", c.N)
	}
	return nil
}

// envSet reports whether v, the GOMAXPROCS environment variable, is one
// the runtime applies: a positive whole number (it ignores any other).
func envSet(v string) bool {
	n, err := strconv.Atoi(v)
	return err == nil && n > 0
}

// Decide returns the processors to run with, and where the figure came
// from:
//   - "GOMAXPROCS" when env (the variable's value) is one the runtime
//     applies: it has, and the figure is def, what the runtime runs with;
//   - "flag" for c.N;
//   - otherwise "default": def, the runtime's default, plus extra when def
//     is cpus, the CPUs the process may run on. Where def is less, a
//     container's CPU limit set it, and more threads than the limit
//     would be throttled rather than share the cores more finely; that
//     case was not measured, and it keeps the runtime's figure. (A limit
//     that the runtime rounds up, or raises to its minimum of 2, back to
//     cpus is not seen: --procs is for it.)
func Decide(c Config, env string, def, cpus, extra int) (int, string) {
	switch {
	case envSet(env):
		return def, "GOMAXPROCS"
	case c.N > 0:
		return c.N, "flag"
	case def == cpus:
		return def + max(extra, 0), "default"
	default:
		return def, "default"
	}
}

// Apply sets GOMAXPROCS from c, with extra processors over the runtime's
// default when c leaves it to the default (see Decide), and logs what it
// did when that is not the runtime's default. The GOMAXPROCS environment
// variable takes precedence. Where Apply leaves the runtime's default, the
// runtime keeps following the container's CPU limit; a figure from the
// flag or with the extra stays as it is.
func Apply(c Config, extra int, log *slog.Logger) int {
	env := os.Getenv("GOMAXPROCS")
	if !envSet(env) {
		// The default, as the runtime would have it now (and not what an
		// earlier Apply in this process set).
		runtime.SetDefaultGOMAXPROCS()
	}
	def := runtime.GOMAXPROCS(0)
	n, source := Decide(c, env, def, runtime.NumCPU(), extra)
	if source == "flag" || n != def {
		runtime.GOMAXPROCS(n)
	}
	if source != "default" || n != def {
		log.Info("processors", "gomaxprocs", n, "source", source, "runtime_default", def, "cpus", runtime.NumCPU())
	}
	return n
}
