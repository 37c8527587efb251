// Package platform holds what every stage shares: flag and environment
// configuration, logging and the HTTP server. Nothing stage-specific.
package platform

import (
	"errors"
	"flag"
	"fmt"
	"maps"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
)

// EnvPrefix prefixes the environment variable of every flag.
const EnvPrefix = "SKYJOIN_"

// EnvName is the environment variable that sets a flag: SKYJOIN_ and the flag
// name in upper case with dashes and dots as underscores (weather-url ->
// SKYJOIN_WEATHER_URL).
func EnvName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(flagName))
}

// ParseFlags parses args into fs, then sets every flag that was not given on
// the command line from its environment variable (see EnvName), if set. It
// reports every bad value at once.
func ParseFlags(fs *flag.FlagSet, args []string) error {
	return parseFlags(fs, args, os.LookupEnv)
}

func parseFlags(fs *flag.FlagSet, args []string, lookup func(string) (string, bool)) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		v, ok := lookup(EnvName(f.Name))
		if !ok {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			shown := strconv.Quote(v)
			if secretName(f.Name) {
				shown = "(value not shown)" // a key given where a reference was wanted
			}
			errs = append(errs, fmt.Errorf("%s=%s: %w", EnvName(f.Name), shown, err))
			f.Value.Set(f.DefValue) // some flag types zero the value on a failed Set
		}
	})
	return errors.Join(errs...)
}

// Problems collects configuration problems so Validate can report them all.
type Problems []string

// Addf records a problem.
func (p *Problems) Addf(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

// Err returns the problems as one error, or nil.
func (p Problems) Err() error {
	if len(p) == 0 {
		return nil
	}
	return fmt.Errorf("invalid configuration:\n  - %s", strings.Join(p, "\n  - "))
}

// URLParam is one parameter of a backend URL's query.
type URLParam struct{ Name, Value string }

// URLParams checks the query of a backend URL against the parameter names
// its backend knows. It returns the parameters, each given once, in name
// order, and an error for every one that is unknown or repeated (those are
// left out), so that a caller reports every problem at once.
func URLParams(rawQuery string, known []string) ([]URLParam, []error) {
	q, err := url.ParseQuery(rawQuery)
	var errs []error
	if err != nil {
		errs = append(errs, fmt.Errorf("parameters: %w", err))
	}
	names := slices.Sorted(maps.Keys(q))
	params := make([]URLParam, 0, len(names))
	for _, k := range names {
		switch vs := q[k]; {
		case !slices.Contains(known, k):
			errs = append(errs, fmt.Errorf("unknown parameter %q (known: %s)", k, strings.Join(known, ", ")))
		case len(vs) > 1:
			errs = append(errs, fmt.Errorf("parameter %q given %d times", k, len(vs)))
		default:
			params = append(params, URLParam{k, vs[0]})
		}
	}
	return params, errs
}

// secretName reports whether a flag's name says it may hold a secret (a
// key, a secret, a token, a password), whose value an error must not show.
func secretName(name string) bool {
	for _, w := range []string{"key", "secret", "token", "password"} {
		if strings.Contains(name, w) {
			return true
		}
	}
	return false
}
