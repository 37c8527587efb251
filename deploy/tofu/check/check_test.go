package check

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// tofuForTest returns a Tofu that serves the committed schemas through the
// schema provider built from this module. It needs OpenTofu:
// SKYJOIN_TOFU names the binary (scripts/terraform-check builds it and sets
// it); without it the test is skipped.
func tofuForTest(t *testing.T) *Tofu {
	t.Helper()
	bin := os.Getenv("SKYJOIN_TOFU")
	if bin == "" {
		t.Skip("SKYJOIN_TOFU is not set: scripts/terraform-check builds OpenTofu and runs these tests with it")
	}
	dir := t.TempDir()
	plugin := filepath.Join(dir, "terraform-provider-schema")
	build := exec.Command("go", "build", "-o", plugin, "../cmd/terraform-provider-schema")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the schema provider: %v\n%s", err, out)
	}
	tf, err := Mirror(filepath.Join(dir, "mirror"), plugin, bin)
	if err != nil {
		t.Fatal(err)
	}
	return tf
}

// fixtureTree copies testdata/fixture into a fresh tree as root/, with
// edit applied to main.tf: each old string must occur exactly once.
func fixtureTree(t *testing.T, edits ...string) string {
	t.Helper()
	src, err := os.ReadFile("../testdata/fixture/main.tf")
	if err != nil {
		t.Fatal(err)
	}
	text := string(src)
	for i := 0; i < len(edits); i += 2 {
		if n := strings.Count(text, edits[i]); n != 1 {
			t.Fatalf("the fixture has %q %d times, want once", edits[i], n)
		}
		text = strings.Replace(text, edits[i], edits[i+1], 1)
	}
	tree := t.TempDir()
	if err := os.MkdirAll(filepath.Join(tree, "root"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "root", "main.tf"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return tree
}

// lineOf is the 1-based line of the first occurrence of s in the fixture
// after edits.
func lineOf(t *testing.T, tree, s string) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(tree, "root", "main.tf"))
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(data), s)
	if i < 0 {
		t.Fatalf("%q not in the edited fixture", s)
	}
	return strings.Count(string(data[:i]), "\n") + 1
}

func TestFixtureValidates(t *testing.T) {
	tf := tofuForTest(t)
	tree := fixtureTree(t)
	results, err := tf.Validate(context.Background(), tree, "root")
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 1 || !results[0].Valid {
		t.Fatalf("the fixture does not validate:\n%s", results[0].Errors())
	}
	for _, leftover := range []string{".terraform", ".terraform.lock.hcl"} {
		if _, err := os.Stat(filepath.Join(tree, "root", leftover)); err == nil {
			t.Errorf("validate left %s in the tree", leftover)
		}
	}
}

// TestValidateCatchesBrokenConfiguration breaks the fixture in the ways a
// schema check must catch, and checks that validate fails, saying what and
// where.
func TestValidateCatchesBrokenConfiguration(t *testing.T) {
	tf := tofuForTest(t)
	for _, tc := range []struct {
		name    string
		edits   []string
		at      string // text on the line the diagnostic must point at
		summary string
		detail  string
	}{
		{
			name:    "unknown argument",
			edits:   []string{`name = "skyjoin-deadletter"`, `name = "skyjoin-deadletter"` + "\n  retention_days = 7"},
			at:      "retention_days",
			summary: "Unsupported argument",
			detail:  `An argument named "retention_days" is not expected here.`,
		},
		{
			name:    "wrong type",
			edits:   []string{`ack_deadline_seconds = 60`, `ack_deadline_seconds = ["60"]`},
			at:      "ack_deadline_seconds",
			summary: "Incorrect attribute value type",
			detail:  "number required",
		},
		{
			name:    "wrong type in a nested block",
			edits:   []string{`max_delivery_attempts = 10`, `max_delivery_attempts = { n = 10 }`},
			at:      "max_delivery_attempts",
			summary: "Incorrect attribute value type",
			detail:  "number required",
		},
		{
			name:    "unknown nested block",
			edits:   []string{`retry_policy {`, `retry_polcy {`},
			at:      "retry_polcy",
			summary: "Unsupported block type",
			detail:  `Blocks of type "retry_polcy" are not expected here. Did you mean "retry_policy"?`,
		},
		{
			name:    "missing required argument",
			edits:   []string{`account_id   = "skyjoin-enrich"`, ``},
			at:      `resource "google_service_account" "enrich"`,
			summary: "Missing required argument",
			detail:  `The argument "account_id" is required, but no definition was found.`,
		},
		{
			name:    "a google-beta type under google",
			edits:   []string{"provider                = google-beta\n", ""},
			at:      `resource "google_dataflow_flex_template_job"`,
			summary: "Invalid resource type",
			detail:  `does not support resource type "google_dataflow_flex_template_job"`,
		},
		{
			name:    "unknown provider argument",
			edits:   []string{"provider \"google\" {\n", "provider \"google\" {\n  zones = \"x\"\n"},
			at:      "zones",
			summary: "Unsupported argument",
			detail:  `An argument named "zones" is not expected here.`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tree := fixtureTree(t, tc.edits...)
			results, err := tf.Validate(context.Background(), tree, "root")
			if err != nil {
				t.Fatal(err)
			}
			r := results[0]
			if r.Valid {
				t.Fatal("the broken fixture validates")
			}
			line := lineOf(t, tree, tc.at)
			for _, d := range r.Diagnostics {
				if d.Severity == "error" && d.Summary == tc.summary && strings.Contains(d.Detail, tc.detail) &&
					d.Range != nil && d.Range.Filename == "main.tf" && d.Range.Start.Line == line {
					return
				}
			}
			t.Errorf("no error %q (%q) at main.tf:%d; got:\n%s", tc.summary, tc.detail, line, r.Errors())
		})
	}
}

func TestInitRefusesAnotherProviderVersion(t *testing.T) {
	tf := tofuForTest(t)
	tree := fixtureTree(t, `source  = "hashicorp/google"
      version = "7.45.0"`, `source  = "hashicorp/google"
      version = "7.44.0"`)
	_, err := tf.Validate(context.Background(), tree, "root")
	if err == nil || !strings.Contains(err.Error(), "7.44.0") {
		t.Errorf("init with a version the mirror lacks: %v", err)
	}
}

func TestFmt(t *testing.T) {
	tf := tofuForTest(t)
	tree := fixtureTree(t)
	if err := tf.Fmt(context.Background(), tree); err != nil {
		t.Fatalf("the fixture is not formatted: %v", err)
	}
	tree = fixtureTree(t, `ack_deadline_seconds = 60`, `ack_deadline_seconds=60`)
	err := tf.Fmt(context.Background(), tree)
	if err == nil || !strings.Contains(err.Error(), "main.tf") {
		t.Errorf("fmt -check of a misformatted file: %v", err)
	}
}
