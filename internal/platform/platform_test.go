package platform

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseFlagsEnvFallback(t *testing.T) {
	env := map[string]string{
		"SKYJOIN_DATA_DIR":     "/from/env",
		"SKYJOIN_ADDR":         "ignored: the flag is given",
		"SKYJOIN_BATCH":        "not a number",
		"SKYJOIN_WAIT_TIME":    "3s",
		"SKYJOIN_UNREGISTERED": "x",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "data", "")
	addr := fs.String("addr", "default", "")
	batch := fs.Int("batch", 10, "")
	wait := fs.Duration("wait-time", time.Second, "")
	err := parseFlags(fs, []string{"--addr", "cli"}, lookup)
	if err == nil || !strings.Contains(err.Error(), "SKYJOIN_BATCH") {
		t.Fatalf("bad env value not reported: %v", err)
	}
	if *dataDir != "/from/env" || *addr != "cli" || *batch != 10 || *wait != 3*time.Second {
		t.Errorf("got data-dir=%q addr=%q batch=%d wait=%s", *dataDir, *addr, *batch, *wait)
	}
	if !strings.Contains(err.Error(), `"not a number"`) {
		t.Errorf("the bad value is not shown: %v", err)
	}

	// A flag whose name says it holds a secret: its bad value is not shown.
	secret := map[string]string{"SKYJOIN_PII_KEY": "raw-secret-given-as-is", "SKYJOIN_API_TOKEN": "tok-123"}
	fs = flag.NewFlagSet("t", flag.ContinueOnError)
	fs.Func("pii-key", "", func(v string) error { return errors.New("want env://NAME or sm://NAME") })
	fs.Func("api-token", "", func(v string) error { return errors.New("want env://NAME") })
	err = parseFlags(fs, nil, func(k string) (string, bool) { v, ok := secret[k]; return v, ok })
	if err == nil || !strings.Contains(err.Error(), "SKYJOIN_PII_KEY") || !strings.Contains(err.Error(), "SKYJOIN_API_TOKEN") {
		t.Fatalf("bad secret values not reported: %v", err)
	}
	for _, v := range secret {
		if strings.Contains(err.Error(), v) {
			t.Errorf("the error shows a secret's value: %v", err)
		}
	}
}

func TestEnvName(t *testing.T) {
	for in, want := range map[string]string{"data-dir": "SKYJOIN_DATA_DIR", "log.level": "SKYJOIN_LOG_LEVEL", "addr": "SKYJOIN_ADDR"} {
		if got := EnvName(in); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLoggerUsesCloudLoggingFields(t *testing.T) {
	var buf bytes.Buffer
	log, err := NewLogger(&buf, LogConfig{Level: "debug", Format: "json"})
	if err != nil {
		t.Fatal(err)
	}
	log.Warn("hello", "k", 1)
	log.Debug("dbg")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines", len(lines))
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatal(err)
	}
	if m["severity"] != "WARNING" || m["message"] != "hello" || m["time"] == nil || m["k"] != 1.0 {
		t.Errorf("record %v", m)
	}
	if _, err := NewLogger(&buf, LogConfig{Level: "loud"}); err == nil {
		t.Error("bad level accepted")
	}
	if _, err := NewLogger(&buf, LogConfig{Level: "info", Format: "xml"}); err == nil {
		t.Error("bad format accepted")
	}
}

// TestLoggerAutoFormat: --log-format auto (the default) writes compact
// text when the log's writer is a terminal and Cloud Logging's JSON
// elsewhere; the terminal decision is replaced to take both branches.
func TestLoggerAutoFormat(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var c LogConfig
	c.RegisterFlags(fs)
	if err := fs.Parse(nil); err != nil || c.Format != "auto" {
		t.Fatalf("the default --log-format is %q (%v), want auto", c.Format, err)
	}
	t.Cleanup(func() { isTerminal = IsTerminal })
	for _, terminal := range []bool{true, false} {
		var buf bytes.Buffer
		var asked io.Writer
		isTerminal = func(w io.Writer) bool { asked = w; return terminal }
		log, err := NewLogger(&buf, c)
		if err != nil {
			t.Fatal(err)
		}
		if asked != &buf {
			t.Errorf("terminal %v: the decision was not asked about the log's writer", terminal)
		}
		log.Warn("hello", "k", 1)
		line := strings.TrimSpace(buf.String())
		var m map[string]any
		isJSON := json.Unmarshal([]byte(line), &m) == nil
		switch {
		case terminal && (isJSON || !strings.Contains(line, "level=WARN msg=hello k=1")):
			t.Errorf("on a terminal: %q, want a text line", line)
		case !terminal && (!isJSON || m["severity"] != "WARNING" || m["message"] != "hello"):
			t.Errorf("not on a terminal: %q, want JSON with Cloud Logging's fields", line)
		}
	}
	if IsTerminal(&bytes.Buffer{}) {
		t.Error("a buffer is taken for a terminal")
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if IsTerminal(f) {
		t.Error("a regular file is taken for a terminal")
	}
	// A character device that is no terminal: logs to /dev/null are not
	// someone at a terminal.
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	if IsTerminal(null) {
		t.Error("/dev/null is taken for a terminal")
	}
}

func TestProblems(t *testing.T) {
	var p Problems
	if p.Err() != nil {
		t.Fatal("no problems, an error")
	}
	p.Addf("a %d", 1)
	p.Addf("b")
	if err := p.Err(); err == nil || !strings.Contains(err.Error(), "a 1") || !strings.Contains(err.Error(), "b") {
		t.Fatalf("Err() = %v", err)
	}
}

func TestWriteUnavailable(t *testing.T) {
	w := httptest.NewRecorder()
	WriteUnavailable(w, 1500*time.Millisecond, "busy")
	if w.Code != 503 || w.Header().Get("Retry-After") != "2" {
		t.Fatalf("%d Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
	var eb ErrorBody
	if err := json.Unmarshal(w.Body.Bytes(), &eb); err != nil || eb.Error.Status != "UNAVAILABLE" || eb.Error.Message != "busy" {
		t.Fatalf("%s", w.Body.Bytes())
	}
}

func TestURLParams(t *testing.T) {
	params, errs := URLParams("b=2&a=1&x=0&c=3&c=4&empty=", []string{"a", "b", "c", "empty"})
	want := []URLParam{{"a", "1"}, {"b", "2"}, {"empty", ""}}
	if fmt.Sprint(params) != fmt.Sprint(want) {
		t.Errorf("params %v, want %v in name order", params, want)
	}
	if len(errs) != 2 || !strings.Contains(errs[0].Error(), `parameter "c" given 2 times`) ||
		!strings.Contains(errs[1].Error(), `unknown parameter "x" (known: a, b, c, empty)`) {
		t.Errorf("errors %v, want c repeated and x unknown", errs)
	}
	if _, errs := URLParams("a=%zz", []string{"a"}); len(errs) != 1 {
		t.Errorf("a bad query: errors %v, want one", errs)
	}
}
