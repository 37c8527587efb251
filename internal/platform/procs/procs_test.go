package procs

import (
	"flag"
	"io"
	"log/slog"
	"runtime"
	"testing"
)

func TestDecide(t *testing.T) {
	for _, c := range []struct {
		name             string
		c                Config
		env              string
		def, cpus, extra int
		want             int
		wantSource       string
	}{
		{"default", Config{}, "", 2, 2, 0, 2, "default"},
		{"default and one for the store", Config{}, "", 2, 2, 1, 3, "default"},
		{"a negative extra is none", Config{}, "", 4, 4, -1, 4, "default"},
		{"a CPU limit below the CPUs: no extra", Config{}, "", 2, 8, 1, 2, "default"},
		{"the flag", Config{N: 6}, "", 2, 2, 1, 6, "flag"},
		{"GOMAXPROCS over the flag", Config{N: 6}, "5", 5, 2, 1, 5, "GOMAXPROCS"},
		{"GOMAXPROCS over the extra", Config{}, "2", 2, 2, 1, 2, "GOMAXPROCS"},
		{"GOMAXPROCS=0 is ignored, as the runtime does", Config{}, "0", 2, 2, 1, 3, "default"},
		{"GOMAXPROCS=abc is ignored", Config{N: 6}, "abc", 2, 2, 1, 6, "flag"},
	} {
		n, source := Decide(c.c, c.env, c.def, c.cpus, c.extra)
		if n != c.want || source != c.wantSource {
			t.Errorf("%s: Decide = %d, %q; want %d, %q", c.name, n, source, c.want, c.wantSource)
		}
	}
}

// TestApply: the runtime's GOMAXPROCS is what Apply says, the default
// plus the extra is the same however often it is applied, and the
// environment variable wins.
func TestApply(t *testing.T) {
	prev := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
	t.Setenv("GOMAXPROCS", "")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	runtime.SetDefaultGOMAXPROCS()
	def := runtime.GOMAXPROCS(0)
	want := def + 1
	if def != runtime.NumCPU() {
		want = def // a CPU limit below the CPUs: no extra
	}
	for i := range 2 {
		if n := Apply(Config{}, 1, log); n != want || runtime.GOMAXPROCS(0) != want {
			t.Errorf("apply %d with one extra: Apply = %d, GOMAXPROCS = %d; want %d (default %d, %d CPUs)", i+1, n, runtime.GOMAXPROCS(0), want, def, runtime.NumCPU())
		}
	}
	if n := Apply(Config{}, 0, log); n != def || runtime.GOMAXPROCS(0) != def {
		t.Errorf("with no extra: Apply = %d, GOMAXPROCS = %d; want the default %d", n, runtime.GOMAXPROCS(0), def)
	}
	if n := Apply(Config{N: def + 3}, 1, log); n != def+3 || runtime.GOMAXPROCS(0) != def+3 {
		t.Errorf("--procs %d: Apply = %d, GOMAXPROCS = %d", def+3, n, runtime.GOMAXPROCS(0))
	}
	// The runtime reads the variable at start; this one set it to 1 then.
	runtime.GOMAXPROCS(1)
	t.Setenv("GOMAXPROCS", "1")
	if n := Apply(Config{N: 4}, 1, log); n != 1 || runtime.GOMAXPROCS(0) != 1 {
		t.Errorf("GOMAXPROCS=1 and --procs 4: Apply = %d, GOMAXPROCS = %d; want 1", n, runtime.GOMAXPROCS(0))
	}
}

func TestFlag(t *testing.T) {
	var c Config
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.RegisterFlags(fs)
	if err := fs.Parse([]string{"--procs", "3"}); err != nil || c.N != 3 || c.Validate() != nil {
		t.Errorf("--procs 3: N = %d, parse %v, validate %v", c.N, err, c.Validate())
	}
	if err := (Config{N: -1}).Validate(); err == nil {
		t.Error("procs -1 is valid")
	}
}
