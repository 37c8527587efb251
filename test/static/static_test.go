// Package static tests the cloud build of skyjoin: CGO_ENABLED=0 with
// -tags noduckdb, the binary of the container image (docs/image.md). It
// must link statically, run, and answer a duckdb:// store with an error
// that says what to use instead.
package static

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The flags of the image build (deploy/image), so that the two share the
// build cache.
var buildArgs = []string{"build", "-tags", "noduckdb", "-trimpath"}

const noDuckDB = "this build of skyjoin has no DuckDB (built with -tags noduckdb): use --store bigquery://"

func TestStaticBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds skyjoin without cgo (about 1.5 min cold)")
	}
	bin := filepath.Join(t.TempDir(), "skyjoin")
	build := exec.Command("go", append(buildArgs, "-o", bin, "../../cmd/skyjoin")...)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build -tags noduckdb: %v\n%s", err, out)
	}

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("the binary is not static: it has a %v program header", p.Type)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary needs shared libraries: %v", libs)
	}
	f.Close()

	out, _, err := run(t, bin, "version")
	if err != nil {
		t.Fatalf("version: %v", err)
	}
	if !strings.HasPrefix(out, "skyjoin ") || !strings.Contains(out, "(tags noduckdb)") {
		t.Errorf("version printed %q, want skyjoin ... (tags noduckdb)", out)
	}

	dir := t.TempDir()
	db := "duckdb://" + filepath.Join(dir, "skyjoin.duckdb")
	for _, args := range [][]string{
		{"serve", "--store", db, "--broker", "nats://embedded", "--data-dir", dir},
		{"up", "--data-dir", dir}, // the default store is a DuckDB file
		{"migrate", "--store", db},
		{"compact", "--store", db},
		{"backfill", "--store", db, "--data-dir", dir},
	} {
		_, stderr, err := run(t, bin, args...)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("%s: exit %v, want status 1\n%s", args, err, stderr)
		}
		if !strings.Contains(stderr, noDuckDB) {
			t.Errorf("%s: stderr does not say %q:\n%s", args, noDuckDB, stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "skyjoin.duckdb")); err == nil {
		t.Error("a DuckDB file was created")
	}
}

func run(t *testing.T, bin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var o, e bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}
