// Package app wires skyjoin's stages into the subcommands of the skyjoin
// binary. Each stage keeps its own configuration; app only chooses backends
// by URL and starts and stops the stages in order.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
	"sort"
	"strings"

	"github.com/skyjoin/skyjoin/internal/platform"
)

type subcommand struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = map[string]subcommand{
	"backfill":    {"join the weather to the records stored without it (run while up is stopped)", runBackfill},
	"broker":      {"run the embedded NATS JetStream broker alone, on TCP, for stages in separate processes", runBroker},
	"compact":     {"rewrite the DuckDB store's file with its live data only, so that erased and expired records leave the disk (run while up is stopped)", runCompact},
	"bench":       {"measure a running or self-started skyjoin: ingest, pipeline, latency, weather, resources", runBench},
	"keys":        {"create, list, rotate and revoke API keys (in the registry, or through a running skyjoin)", runKeys},
	"deadletters": {"list the events the worker could not process, with the reason", runDeadLetters},
	"replay":      {"publish dead letters to the pipeline again once the cause is fixed", runReplay},
	"migrate":     {"create or update the store's tables (BigQuery: dataset, partitioned table, dedup view)", runMigrate},
	"schema":      {"print the event JSON Schema, or the store's DDL with --ddl", runSchema},
	"sim":         {"run the built-in simulators of the users and weather APIs alone, with optional injected faults", runSim},
	"version":     {"print the version", runVersion},
}

func init() {
	for _, c := range stageCommands {
		name := c.name
		commands[name] = subcommand{c.summary, func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			return runStageCommand(ctx, name, args, stdout, stderr)
		}}
	}
}

// errUsage marks errors in how skyjoin was called (exit code 2).
var errUsage = errors.New("usage")

// parseFlags parses args and the SKYJOIN_* environment into fs: a flag it
// does not know or a bad value is a usage error (exit code 2), as in every
// command.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := platform.ParseFlags(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	return nil
}

// ExitCode maps an error from Main to the process exit code.
func ExitCode(err error) int {
	if errors.Is(err, errUsage) || errors.Is(err, flag.ErrHelp) {
		return 2
	}
	return 1
}

// Main runs the subcommand named by args[0].
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stderr)
		if len(args) == 0 {
			return fmt.Errorf("%w: no command given", errUsage)
		}
		return nil
	}
	cmd, ok := commands[args[0]]
	if !ok {
		usage(stderr)
		return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
	}
	err := cmd.run(ctx, args[1:], stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

func usage(w io.Writer) {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("skyjoin joins a stream of user events with the weather at each user's place.\n\nUsage: skyjoin <command> [flags]\n\nCommands:\n")
	for _, n := range names {
		fmt.Fprintf(&b, "  %-12s %s\n", n, commands[n].summary)
	}
	b.WriteString("\nRun skyjoin <command> -h for the flags of a command. Every flag can also be set\nwith an environment variable: SKYJOIN_ and the flag name in upper case, dashes as\nunderscores (--data-dir -> SKYJOIN_DATA_DIR).\n")
	io.WriteString(w, b.String())
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("skyjoin "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// version and revision name the build when the linker sets them (the image
// build: go build -ldflags "-X github.com/skyjoin/skyjoin/internal/app.version=..."),
// in place of the module's build information.
var version, revision string

func runVersion(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	v, rev, tags := "devel", revision, ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		v = bi.Main.Version
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if rev == "" {
					rev = s.Value
				}
			case "-tags":
				tags = s.Value
			}
		}
	}
	if version != "" {
		v = version
	}
	if rev != "" {
		v += " " + rev
	}
	if tags != "" {
		v += " (tags " + tags + ")"
	}
	fmt.Fprintln(stdout, "skyjoin", v)
	return nil
}
