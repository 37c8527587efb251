// Package check runs OpenTofu's offline checks of the Terraform roots:
// `tofu fmt -check` and `tofu init -backend=false` + `tofu validate` against
// the committed schemas of the google and google-beta providers, served by
// the schema provider (cmd/terraform-provider-schema) from a filesystem
// mirror. Roots are validated in a scratch copy of the repository, so that
// neither .terraform nor a lock file of the schema provider lands in the
// tree, and a committed lock file (of the real providers) is left alone.
package check

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/skyjoin/skyjoin/deploy/tofu/schema"
)

// Tofu runs one OpenTofu binary with a CLI configuration that installs
// providers from a filesystem mirror only.
type Tofu struct {
	Path      string // the tofu binary
	CLIConfig string // TF_CLI_CONFIG_FILE
}

// Mirror lays out a filesystem mirror in dir that offers the schema
// provider binary plugin as every provider with a committed schema, at the
// committed version, and writes the CLI configuration that installs from
// it and from nowhere else; tofu is the OpenTofu binary to run with it.
func Mirror(dir, plugin, tofu string) (*Tofu, error) {
	names, err := schema.Names()
	if err != nil {
		return nil, err
	}
	bin, err := os.ReadFile(plugin)
	if err != nil {
		return nil, fmt.Errorf("read schema provider: %w", err)
	}
	var include []string
	for _, name := range names {
		f, err := schema.Load(name)
		if err != nil {
			return nil, err
		}
		host, ns, typ, ok := splitAddress(f.Provider)
		if !ok {
			return nil, fmt.Errorf("schema of %s: provider address %q is not HOST/NAMESPACE/TYPE", name, f.Provider)
		}
		if typ != name {
			return nil, fmt.Errorf("schema file %s.json is of provider %s", name, f.Provider)
		}
		pdir := filepath.Join(dir, host, ns, typ, f.Version, runtime.GOOS+"_"+runtime.GOARCH)
		if err := os.MkdirAll(pdir, 0o755); err != nil {
			return nil, err
		}
		exe := filepath.Join(pdir, "terraform-provider-"+typ+"_v"+f.Version)
		if err := os.WriteFile(exe, bin, 0o755); err != nil {
			return nil, err
		}
		include = append(include, fmt.Sprintf("%q", f.Provider))
	}
	cfg := filepath.Join(dir, "tofurc")
	text := fmt.Sprintf("provider_installation {\n  filesystem_mirror {\n    path    = %q\n    include = [%s]\n  }\n}\n",
		dir, strings.Join(include, ", "))
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		return nil, err
	}
	return &Tofu{Path: tofu, CLIConfig: cfg}, nil
}

func splitAddress(addr string) (host, ns, typ string, ok bool) {
	parts := strings.Split(addr, "/")
	if len(parts) != 3 {
		return "", "", "", false
	}
	return parts[0], parts[1], parts[2], true
}

func (t *Tofu) run(ctx context.Context, dir string, args ...string) (stdout, stderr []byte, err error) {
	cmd := exec.CommandContext(ctx, t.Path, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"TF_CLI_CONFIG_FILE="+t.CLIConfig,
		"TF_IN_AUTOMATION=1",
		"TF_INPUT=0",
		"CHECKPOINT_DISABLE=1",
		"TF_PLUGIN_CACHE_DIR=",
		"TF_DATA_DIR=",
		"TF_LOG=",
	)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.Bytes(), errb.Bytes(), err
}

// Fmt runs `tofu fmt -check -recursive -diff` on dir and returns an error
// with the files that are not formatted, and the diff.
func (t *Tofu) Fmt(ctx context.Context, dir string) error {
	out, errb, err := t.run(ctx, dir, "fmt", "-check", "-recursive", "-diff", "-no-color")
	if err != nil {
		return fmt.Errorf("tofu fmt -check %s: %w: files not formatted (run `tofu fmt -recursive %s`):\n%s%s", dir, err, dir, out, errb)
	}
	return nil
}

// Diagnostic is one diagnostic of `tofu validate -json`.
type Diagnostic struct {
	Severity string `json:"severity"`
	Summary  string `json:"summary"`
	Detail   string `json:"detail"`
	Range    *struct {
		Filename string `json:"filename"`
		Start    struct {
			Line int `json:"line"`
		} `json:"start"`
	} `json:"range"`
}

func (d Diagnostic) String() string {
	at := ""
	if d.Range != nil {
		at = fmt.Sprintf("%s:%d: ", d.Range.Filename, d.Range.Start.Line)
	}
	return fmt.Sprintf("%s%s: %s: %s", at, d.Severity, d.Summary, d.Detail)
}

// Result is the outcome of validating one root.
type Result struct {
	Root        string // relative to the tree
	Valid       bool
	Diagnostics []Diagnostic
}

// Errors returns the error diagnostics, one a line.
func (r *Result) Errors() string {
	var b strings.Builder
	for _, d := range r.Diagnostics {
		if d.Severity == "error" {
			fmt.Fprintf(&b, "%s: %s\n", r.Root, d)
		}
	}
	return b.String()
}

// Validate copies tree (a repository checkout) into a scratch directory and
// runs `tofu init -backend=false` and `tofu validate -json` in each root
// (a directory relative to tree). An error means tofu could not run or
// init failed; a configuration that does not validate is a Result with
// Valid false and its diagnostics (file names relative to the root).
func (t *Tofu) Validate(ctx context.Context, tree string, roots ...string) ([]*Result, error) {
	scratch, err := scratchCopy(tree)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(scratch)
	var results []*Result
	for _, root := range roots {
		dir := filepath.Join(scratch, root)
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("root %s: not a directory of %s", root, tree)
		}
		if _, errb, err := t.run(ctx, dir, "init", "-backend=false", "-input=false", "-no-color"); err != nil {
			return nil, fmt.Errorf("tofu init -backend=false in %s: %w\n%s", root, err, errb)
		}
		out, errb, err := t.run(ctx, dir, "validate", "-json", "-no-color")
		var v struct {
			Valid       bool         `json:"valid"`
			Diagnostics []Diagnostic `json:"diagnostics"`
		}
		if jerr := json.Unmarshal(out, &v); jerr != nil {
			return nil, fmt.Errorf("tofu validate in %s: %v; output: %s%s", root, errors.Join(err, jerr), out, errb)
		}
		if v.Valid != (err == nil) {
			return nil, fmt.Errorf("tofu validate in %s: valid=%v but exit %v", root, v.Valid, err)
		}
		results = append(results, &Result{Root: root, Valid: v.Valid, Diagnostics: v.Diagnostics})
	}
	return results, nil
}

// scratchCopy copies tree into a new temporary directory (see copyTree),
// which the caller removes.
func scratchCopy(tree string) (string, error) {
	scratch, err := os.MkdirTemp("", "tofu-check-")
	if err != nil {
		return "", err
	}
	if err := copyTree(tree, scratch); err != nil {
		os.RemoveAll(scratch)
		return "", fmt.Errorf("copy %s: %w", tree, err)
	}
	return scratch, nil
}

// Test runs `tofu init -backend=false` and `tofu test` in each dir (a
// module of tree with tests/*.tftest.hcl whose providers are mocked:
// mock_provider blocks), in a scratch copy of tree. The schema provider
// gives the mocks their schema, reads state back as written and reports
// no drift; a test that needs the real provider fails saying so.
func (t *Tofu) Test(ctx context.Context, tree string, dirs ...string) error {
	scratch, err := scratchCopy(tree)
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	var problems []error
	for _, d := range dirs {
		dir := filepath.Join(scratch, d)
		if _, errb, err := t.run(ctx, dir, "init", "-backend=false", "-input=false", "-no-color"); err != nil {
			return fmt.Errorf("tofu init -backend=false in %s: %w\n%s", d, err, errb)
		}
		out, errb, err := t.run(ctx, dir, "test", "-no-color")
		if err != nil {
			problems = append(problems, fmt.Errorf("tofu test %s: %w\n%s%s", d, err, out, errb))
		}
	}
	return errors.Join(problems...)
}

// skipDir are directories not copied into the scratch tree: version
// control, OpenTofu's working data, build output, and skyjoin's default
// data directory (a local `skyjoin up` leaves one at the top).
var skipDir = map[string]bool{".git": true, ".terraform": true, "dist": true, "node_modules": true}

// copyTree copies the regular files of src into dst, leaving out skipDir
// and lock files (the scratch init writes the schema provider's own).
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			if (skipDir[d.Name()] || rel == "data") && rel != "." {
				return filepath.SkipDir
			}
			return os.MkdirAll(target, 0o755)
		case d.Name() == ".terraform.lock.hcl", !d.Type().IsRegular():
			return nil
		}
		return copyFile(path, target)
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Roots lists the directories matching pattern (relative to tree, e.g.
// deploy/terraform/envs/*) that hold .tf files.
func Roots(tree, pattern string) ([]string, error) {
	matches, err := filepath.Glob(filepath.Join(tree, pattern))
	if err != nil {
		return nil, err
	}
	var roots []string
	for _, m := range matches {
		tf, _ := filepath.Glob(filepath.Join(m, "*.tf"))
		if len(tf) == 0 {
			continue
		}
		rel, err := filepath.Rel(tree, m)
		if err != nil {
			return nil, err
		}
		roots = append(roots, rel)
	}
	return roots, nil
}
