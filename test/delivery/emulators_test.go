package delivery

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestEmulatorsNeed: `scripts/emulators need NAME`, which scripts/test
// asks of each emulator, answers 0 when java and the emulator's jar are
// there; when one is missing, 1 (its tests are skipped) outside CI and 2
// (scripts/test fails) under CI, unless SKYJOIN_SKIP_EMULATORS=1.
func TestEmulatorsNeed(t *testing.T) {
	dir := t.TempDir()
	java := filepath.Join(dir, "java")
	if err := os.WriteFile(java, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	jar := filepath.Join(dir, "emulator.jar")
	if err := os.WriteFile(jar, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	noJava := "JAVA=" + filepath.Join(dir, "no-java")
	noJar := "PUBSUB_EMULATOR_JAR=" + filepath.Join(dir, "none.jar")
	for _, tc := range []struct {
		name string
		env  []string
		code int
		says string
	}{
		{"here, under CI", []string{"JAVA=" + java, "PUBSUB_EMULATOR_JAR=" + jar, "CI=true"}, 0, ""},
		{"no java, outside CI", []string{noJava, "CI="}, 1, "no java"},
		{"no java, CI=false", []string{noJava, "CI=false"}, 1, "no java"},
		{"no java, under CI", []string{noJava, "CI=true"}, 2, "set SKYJOIN_SKIP_EMULATORS=1 to skip its tests"},
		{"no jar, under CI", []string{"JAVA=" + java, noJar, "CI=true"}, 2, "no pubsub emulator at"},
		{"no java, under CI, skipped on purpose", []string{noJava, "CI=true", "SKYJOIN_SKIP_EMULATORS=1"}, 1, "SKYJOIN_SKIP_EMULATORS=1: its tests are skipped"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := append([]string{"SKYJOIN_SKIP_EMULATORS="}, tc.env...)
			_, stderr, err := script(t, env, "emulators", "need", "pubsub")
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code || !strings.Contains(stderr, tc.says) {
				t.Errorf("exit %d, want %d; stderr %q, want it to say %q", code, tc.code, stderr, tc.says)
			}
		})
	}
}

// TestEmulatorsFindTheSDKOnPath: the emulators' jars are looked for under
// the root of the gcloud on PATH first (google-github-actions/setup-gcloud
// installs the Google Cloud CLI, and the components, outside
// /usr/lib/google-cloud-sdk), through a symbolic link to it too.
func TestEmulatorsFindTheSDKOnPath(t *testing.T) {
	dir := t.TempDir()
	sdk := filepath.Join(dir, "gcloud", "552.0.0", "x64")
	want := map[string]string{
		"pubsub":    filepath.Join(sdk, "platform/pubsub-emulator/lib/cloud-pubsub-emulator-0.8.99-all.jar"),
		"firestore": filepath.Join(sdk, "platform/cloud-firestore-emulator/cloud-firestore-emulator.jar"),
	}
	for _, f := range append([]string{filepath.Join(sdk, "bin", "gcloud")}, want["pubsub"], want["firestore"]) {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(sdk, "bin", "gcloud"), filepath.Join(bin, "gcloud")); err != nil {
		t.Fatal(err)
	}
	for name, jar := range want {
		out, stderr, err := script(t, []string{"PATH=" + bin + ":" + os.Getenv("PATH"), "PUBSUB_EMULATOR_JAR=", "FIRESTORE_EMULATOR_JAR="}, "emulators", "jar", name)
		if err != nil || strings.TrimSpace(out) != jar {
			t.Errorf("emulators jar %s: %q (%v %s), want %s", name, out, err, stderr, jar)
		}
	}
}

// TestCIInstallsEmulators: ci.yml installs what the emulators need (java,
// and the Google Cloud CLI's pubsub and firestore emulator components)
// before scripts/test, which fails under CI without them.
func TestCIInstallsEmulators(t *testing.T) {
	jobs := 0
	for name, job := range readWorkflow(t, "ci.yml").Jobs {
		// Within the job that runs scripts/test: its steps run in order,
		// on one machine; another job's setup does not count.
		var java, gcloud, test int
		for i, s := range job.Steps {
			switch {
			case strings.HasPrefix(s.Uses, "actions/setup-java@"):
				java = i + 1
			case strings.HasPrefix(s.Uses, "google-github-actions/setup-gcloud@"):
				gcloud = i + 1
				for _, c := range []string{"pubsub-emulator", "cloud-firestore-emulator"} {
					if !strings.Contains(s.With["install_components"], c) {
						t.Errorf("job %s: setup-gcloud installs components %q, without %s", name, s.With["install_components"], c)
					}
				}
			case strings.TrimSpace(s.Run) == "scripts/test":
				test = i + 1
			}
		}
		if test == 0 {
			continue
		}
		jobs++
		if java == 0 || gcloud == 0 || java > test || gcloud > test {
			t.Errorf("job %s: setup-java #%d, setup-gcloud #%d, scripts/test #%d; want both before scripts/test", name, java, gcloud, test)
		}
	}
	if jobs == 0 {
		t.Error("no job of ci.yml runs scripts/test")
	}
}
