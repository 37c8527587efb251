// Command tofucheck runs the offline checks of skyjoin's Terraform and
// regenerates the committed provider schemas they use.
//
//	tofucheck validate -tofu TOFU -plugin PLUGIN [-tree DIR] [-fmt DIR]... [-test DIR]... ROOT...
//	    tofu fmt -check of each -fmt directory, then tofu init -backend=false
//	    and tofu validate of each ROOT (a directory of the tree, or a glob such
//	    as deploy/terraform/envs/*) against the committed schemas, served by
//	    PLUGIN (cmd/terraform-provider-schema) from a scratch mirror, then
//	    tofu test of each -test module (its providers mocked).
//
//	tofucheck schema -full FULL.json -versions VERSION.json [-source NAME=TEXT]... -out DIR SCAN_DIR...
//	    prunes `tofu providers schema -json` (FULL.json) of the real providers
//	    to the resource and data source types that the .tf files under the
//	    SCAN_DIRs use, and writes DIR/NAME.json for each provider, at the
//	    version `tofu version -json` (VERSION.json) reports for it.
//
// scripts/terraform-check and scripts/terraform-schema run it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/skyjoin/skyjoin/deploy/tofu/check"
	"github.com/skyjoin/skyjoin/deploy/tofu/schema"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tofucheck:", err)
		os.Exit(1)
	}
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: tofucheck validate|schema ... (see the package doc)")
	}
	switch args[0] {
	case "validate":
		return validate(ctx, args[1:])
	case "schema":
		return prune(args[1:])
	}
	return fmt.Errorf("unknown subcommand %q: want validate or schema", args[0])
}

func validate(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	tofu := fs.String("tofu", "", "the OpenTofu binary")
	plugin := fs.String("plugin", "", "the schema provider binary (cmd/terraform-provider-schema)")
	tree := fs.String("tree", ".", "the repository checkout the roots are in")
	var fmtDirs, testDirs multi
	fs.Var(&fmtDirs, "fmt", "a directory of the tree for tofu fmt -check -recursive (repeatable)")
	fs.Var(&testDirs, "test", "a module of the tree for tofu test, with mocked providers (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var problems []error
	if *tofu == "" {
		problems = append(problems, errors.New("-tofu: missing"))
	}
	if *plugin == "" {
		problems = append(problems, errors.New("-plugin: missing"))
	}
	if fs.NArg() == 0 {
		problems = append(problems, errors.New("no root to validate"))
	}
	if err := errors.Join(problems...); err != nil {
		return err
	}
	var roots []string
	for _, pattern := range fs.Args() {
		matched, err := check.Roots(*tree, pattern)
		if err != nil {
			return fmt.Errorf("root %s: %w", pattern, err)
		}
		if len(matched) == 0 {
			return fmt.Errorf("root %s: no directory with .tf files matches", pattern)
		}
		roots = append(roots, matched...)
	}
	mirror, err := os.MkdirTemp("", "tofu-mirror-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(mirror)
	t, err := check.Mirror(mirror, *plugin, *tofu)
	if err != nil {
		return err
	}
	for _, dir := range fmtDirs {
		if err := t.Fmt(ctx, filepath.Join(*tree, dir)); err != nil {
			problems = append(problems, err)
			continue
		}
		fmt.Printf("tofu fmt -check %s: ok\n", dir)
	}
	results, err := t.Validate(ctx, *tree, roots...)
	if err != nil {
		return err
	}
	for _, r := range results {
		if !r.Valid {
			problems = append(problems, fmt.Errorf("tofu validate %s:\n%s", r.Root, r.Errors()))
			continue
		}
		fmt.Printf("tofu validate %s: ok (%d warnings)\n", r.Root, len(r.Diagnostics))
		for _, d := range r.Diagnostics {
			fmt.Printf("  %s\n", d)
		}
	}
	if len(testDirs) > 0 {
		if err := t.Test(ctx, *tree, testDirs...); err != nil {
			problems = append(problems, err)
		} else {
			fmt.Printf("tofu test %s: ok\n", strings.Join(testDirs, " "))
		}
	}
	return errors.Join(problems...)
}

func prune(args []string) error {
	fs := flag.NewFlagSet("schema", flag.ContinueOnError)
	fullPath := fs.String("full", "", "`tofu providers schema -json` of the real providers")
	versionsPath := fs.String("versions", "", "`tofu version -json` of the same root (provider_selections)")
	out := fs.String("out", "", "the directory to write NAME.json into")
	var sources multi
	fs.Var(&sources, "source", "NAME=TEXT: where provider NAME was built from (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var problems []error
	for name, v := range map[string]string{"-full": *fullPath, "-versions": *versionsPath, "-out": *out} {
		if v == "" {
			problems = append(problems, fmt.Errorf("%s: missing", name))
		}
	}
	if fs.NArg() == 0 {
		problems = append(problems, errors.New("no directory to scan"))
	}
	if err := errors.Join(problems...); err != nil {
		return err
	}
	source := map[string]string{}
	for _, s := range sources {
		name, text, ok := strings.Cut(s, "=")
		if !ok {
			return fmt.Errorf("-source %q: want NAME=TEXT", s)
		}
		source[name] = text
	}
	var full schema.Full
	if err := readJSON(*fullPath, &full); err != nil {
		return err
	}
	var versions struct {
		Version    string            `json:"terraform_version"`
		Selections map[string]string `json:"provider_selections"`
	}
	if err := readJSON(*versionsPath, &versions); err != nil {
		return err
	}
	used, err := schema.Scan(fs.Args()...)
	if err != nil {
		return err
	}
	var pruned []*schema.Provider
	for _, addr := range slices.Sorted(maps.Keys(full.Schemas)) {
		name := path.Base(addr)
		version, ok := versions.Selections[addr]
		if !ok {
			return fmt.Errorf("%s: no version for %s", *versionsPath, addr)
		}
		p := schema.Prune(full.Schemas[addr], used)
		pruned = append(pruned, p)
		f := &schema.File{Provider: addr, Version: version, Source: source[name], Tofu: versions.Version, Schema: *p}
		data, err := f.Marshal()
		if err != nil {
			return err
		}
		if _, err := schema.ParseFile(data); err != nil {
			return err
		}
		dst := filepath.Join(*out, name+".json")
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			return err
		}
		fmt.Printf("%s: %s %s, %d resource and %d data source types, %d bytes\n",
			dst, addr, version, len(p.ResourceSchemas), len(p.DataSourceSchemas), len(data))
	}
	if missing := schema.Missing(used, pruned...); len(missing) > 0 {
		return fmt.Errorf("types no provider has:\n  %s", strings.Join(missing, "\n  "))
	}
	return nil
}

func readJSON(name string, v any) error {
	data, err := os.ReadFile(name)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}
