package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/skyjoin/skyjoin/dataflow/pipeline"
)

// binary is the skyjoin-dataflow binary, built once for the tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "skyjoin-dataflow-test")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "skyjoin-dataflow")
	// The Flex Template image builds it with CGO_ENABLED=0 (TestDockerfile);
	// here it shares the build cache of go build ./... instead.
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	code := 1
	if err := build.Run(); err == nil {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// placeholders are flags that name nothing that exists: the dry run
// contacts no one.
var placeholders = []string{
	"--runner=dataflow", "--dry_run",
	"--project=placeholder-project", "--region=europe-west1",
	"--staging_location=gs://placeholder-bucket/staging", "--temp_location=gs://placeholder-bucket/tmp",
	"--max_num_workers=4",
	"--subscription=projects/placeholder-project/subscriptions/skyjoin-events-dataflow",
	"--deadletter_topic=projects/placeholder-project/topics/skyjoin-deadletter",
	"--bq_table=placeholder-project.skyjoin.events",
	"--records_topic=projects/placeholder-project/topics/skyjoin-records",
	"--weather_api_key=sm://projects/placeholder-project/secrets/weather-key/versions/latest",
	"--pii_key=sm://projects/placeholder-project/secrets/pii-key/versions/latest",
}

func run(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	// No credentials and no metadata server: nothing to contact Google with.
	cmd.Env = append(os.Environ(), "GOOGLE_APPLICATION_CREDENTIALS=/nonexistent", "GCE_METADATA_HOST=127.0.0.1:1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// TestDryRunTranslatesForDataflow: with the Dataflow runner's --dry_run the
// binary builds the pipeline, translates it into a Dataflow job and prints
// it without submitting: a streaming job reading the subscription with the
// envelope's message_id as id attribute, writing the dead-letter topic,
// with skyjoin's options and the autoscaling ceiling.
func TestDryRunTranslatesForDataflow(t *testing.T) {
	_, stderr, err := run(t, placeholders...)
	if err != nil {
		t.Fatalf("dry run: %v\n%s", err, stderr)
	}
	for _, want := range []string{
		"Dry-run: not submitting job!",
		`beam:transform:pubsub_read:v1`,
		`projects/placeholder-project/subscriptions/skyjoin-events-dataflow`,
		`\nmessage_id`, // PubSubReadPayload.id_attribute
		`beam:transform:pubsub_write:v1`,
		`projects/placeholder-project/topics/skyjoin-deadletter`,
		`projects/placeholder-project/topics/skyjoin-records`,
		`skyjoin/pipeline.enrichFn`, `skyjoin/pipeline.writeFn`,
		`JOB_TYPE_STREAMING`, `enable_streaming_engine`,
		`\"maxNumWorkers\": 4`,
		`\"bq_table\": \"placeholder-project.skyjoin.events\"`,
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("the dry run's output lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", stderr)
	}
}

// TestBadFlagsAreRefused: a job with missing or malformed options is not
// submitted, and the error names each option.
func TestBadFlagsAreRefused(t *testing.T) {
	args := slices.DeleteFunc(slices.Clone(placeholders), func(a string) bool {
		return strings.HasPrefix(a, "--subscription=") || strings.HasPrefix(a, "--bq_table=")
	})
	args = append(args, "--bq_table=skyjoin.events", "--weather_quota=lots")
	_, stderr, err := run(t, args...)
	if err == nil {
		t.Fatalf("the job ran with bad options:\n%s", stderr)
	}
	for _, want := range []string{"subscription must be", "bq_table", "weather_quota"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("the error does not name %s:\n%s", want, stderr)
		}
	}
	if strings.Contains(stderr, "Dry-run") {
		t.Errorf("the job was translated despite bad options")
	}
}

type metadata struct {
	Name       string `json:"name"`
	Streaming  bool   `json:"streaming"`
	Parameters []struct {
		Name         string   `json:"name"`
		Label        string   `json:"label"`
		HelpText     string   `json:"helpText"`
		IsOptional   bool     `json:"isOptional"`
		DefaultValue *string  `json:"defaultValue"`
		Regexes      []string `json:"regexes"`
	} `json:"parameters"`
}

// TestTemplateMetadataMatchesFlags: the Flex Template's metadata.json lists
// every one of skyjoin's flags of the binary and nothing the binary does
// not take; exactly the options Validate requires are not optional; a
// default is the flag's; and each parameter's regexes accept its default.
func TestTemplateMetadataMatchesFlags(t *testing.T) {
	b, err := os.ReadFile("../../flextemplate/metadata.json")
	if err != nil {
		t.Fatal(err)
	}
	var md metadata
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&md); err != nil {
		t.Fatalf("metadata.json: %v", err)
	}
	if md.Name == "" || !md.Streaming {
		t.Errorf("metadata.json: name %q, streaming %v", md.Name, md.Streaming)
	}
	// The binary's flags, as its -help lists them (Beam's and skyjoin's).
	_, help, _ := run(t, "-help")
	binFlags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z_]+)`).FindAllStringSubmatch(help, -1) {
		binFlags[m[1]] = true
	}
	// skyjoin's own, with their defaults.
	var cfg pipeline.Config
	fs := flag.NewFlagSet("skyjoin", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	// What Validate requires of an empty configuration on Dataflow.
	verr := pipeline.Config{WeatherProvider: pipeline.ProviderOpenMeteo, PIIPolicy: "keep", MaxClockSkew: 1}.Validate(false)
	params := map[string]bool{}
	for _, p := range md.Parameters {
		params[p.Name] = true
		f := fs.Lookup(p.Name)
		if f == nil || !binFlags[p.Name] {
			t.Errorf("parameter %s is not one of skyjoin's flags of the binary", p.Name)
			continue
		}
		if p.Label == "" || p.HelpText == "" {
			t.Errorf("parameter %s has no label or help text", p.Name)
		}
		required := verr != nil && strings.Contains(verr.Error(), p.Name+" must be")
		if p.IsOptional == required {
			t.Errorf("parameter %s: isOptional %v, but Validate requires it: %v", p.Name, p.IsOptional, required)
		}
		if p.DefaultValue != nil && *p.DefaultValue != f.DefValue {
			t.Errorf("parameter %s: defaultValue %q, the flag's default is %q", p.Name, *p.DefaultValue, f.DefValue)
		}
		for _, re := range p.Regexes {
			rx, err := regexp.Compile(re)
			if err != nil {
				t.Errorf("parameter %s: regex %q: %v", p.Name, re, err)
				continue
			}
			if f.DefValue != "" && f.DefValue != "0" && !rx.MatchString(f.DefValue) {
				t.Errorf("parameter %s: regex %q refuses the default %q", p.Name, re, f.DefValue)
			}
		}
	}
	fs.VisitAll(func(f *flag.Flag) {
		if !params[f.Name] {
			t.Errorf("flag --%s is not a parameter of metadata.json", f.Name)
		}
	})
	// The required ones' regexes accept what the dry run passes.
	for _, a := range placeholders {
		name, value, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		for _, p := range md.Parameters {
			for _, re := range p.Regexes {
				if p.Name == name && !regexp.MustCompile(re).MatchString(value) {
					t.Errorf("parameter %s: regex %q refuses %q", name, re, value)
				}
			}
		}
	}
}

// TestDockerfile: the Flex Template's Dockerfile builds this command with
// go.mod's Go, statically, and points the launcher at the binary it copies.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("../../flextemplate/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(gomod)
	df := string(b)
	for _, want := range []string{
		"FROM golang:" + string(goVersion[1]) + " AS build",
		"CGO_ENABLED=0 GOOS=linux GOARCH=amd64",
		"-o /out/skyjoin-dataflow ./cmd/skyjoin-dataflow",
		"FROM gcr.io/dataflow-templates-base/go-template-launcher-base",
		"COPY --from=build /out/skyjoin-dataflow /template/skyjoin-dataflow",
		"ENV FLEX_TEMPLATE_GO_BINARY=/template/skyjoin-dataflow",
	} {
		if !strings.Contains(df, want) {
			t.Errorf("the Dockerfile lacks %q", want)
		}
	}
}
