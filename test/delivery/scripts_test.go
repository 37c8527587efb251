package delivery

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/test/testbin"
)

var binary string

func TestMain(m *testing.M) { testbin.Main(m, &binary) }

// script runs scripts/NAME with args and extra environment, and returns
// its stdout, stderr and error.
func script(t *testing.T, env []string, name string, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(root, "scripts", name), args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// TestSmoke runs scripts/smoke against a real skyjoin with auth on: the
// event it posts with a bearer credential is read back; a refused
// credential and a record that never shows up fail it, saying why.
func TestSmoke(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("scripts/smoke needs curl")
	}
	data := t.TempDir()
	out, err := exec.Command(binary, "keys", "create", "--scope", "ingest,read", "--name", "smoke", "--data-dir", data, "--json").Output()
	if err != nil {
		t.Fatalf("skyjoin keys create: %v", err)
	}
	var key struct{ Token string }
	if err := json.Unmarshal(out, &key); err != nil || key.Token == "" {
		t.Fatalf("skyjoin keys create: %v %s", err, out)
	}
	_, base := testbin.StartAPI(t, binary, "up", "--demo", "--collect=false", "--addr", "127.0.0.1:0",
		"--data-dir", data, "--stats-every", "0", "--log-level", "warn", "--auth=on")
	env := func(extra ...string) []string {
		return append([]string{
			"SMOKE_INGEST_URL=" + base, "SMOKE_SERVE_URL=" + base,
			"SMOKE_INGEST_TOKEN=" + key.Token, "SMOKE_SERVE_TOKEN=" + key.Token, "SMOKE_TIMEOUT=60",
		}, extra...)
	}

	stdout, stderr, err := script(t, env(), "smoke")
	if err != nil {
		t.Fatalf("scripts/smoke: %v\n%s%s", err, stdout, stderr)
	}
	if !strings.Contains(stdout, "posted smoke-") || !strings.Contains(stdout, "back from "+base) {
		t.Errorf("scripts/smoke said:\n%s", stdout)
	}

	_, stderr, err = script(t, env("SMOKE_INGEST_TOKEN=sk_not_a_key"), "smoke")
	if err == nil || !strings.Contains(stderr, "answered 401, want 202") {
		t.Errorf("scripts/smoke with a bad credential: %v\n%s", err, stderr)
	}

	never := httptest.NewServer(http.NotFoundHandler())
	defer never.Close()
	_, stderr, err = script(t, env("SMOKE_SERVE_URL="+never.URL, "SMOKE_TIMEOUT=1"), "smoke")
	if err == nil || !strings.Contains(stderr, "not readable from "+never.URL+" within 1s (last answer 404)") {
		t.Errorf("scripts/smoke when the record never shows up: %v\n%s", err, stderr)
	}
}

// fakeGcloud puts a gcloud on PATH that answers `run services describe`
// and `run revisions list` from dir/SERVICE.service.json and
// dir/SERVICE.revisions.json, fails for a service without them, and logs
// every call to dir/calls.
func fakeGcloud(t *testing.T) (dir string, env []string) {
	t.Helper()
	dir = t.TempDir()
	fake := `#!/usr/bin/env bash
echo "$*" >>"$FAKE_GCLOUD/calls"
svc=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
	case "${args[i]}" in
	--service) svc=${args[i+1]} ;;
	describe | update | update-traffic) svc=${args[i+1]} ;;
	esac
done
case "$1 $2 $3" in
"run services describe")
	[[ -f "$FAKE_GCLOUD/$svc.service.json" ]] || { echo "ERROR: service $svc not found" >&2; exit 1; }
	if [[ "$*" == *--format=json* ]]; then cat "$FAKE_GCLOUD/$svc.service.json"; else echo "$svc"; fi ;;
"run revisions list") cat "$FAKE_GCLOUD/$svc.revisions.json" ;;
"run services update" | "run services update-traffic") ;;
*) echo "fake gcloud: unexpected $*" >&2; exit 3 ;;
esac
`
	if err := os.WriteFile(filepath.Join(dir, "gcloud"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, []string{"PATH=" + dir + string(os.PathListSeparator) + os.Getenv("PATH"), "FAKE_GCLOUD=" + dir}
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func calls(t *testing.T, dir string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "calls"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if strings.Contains(l, "update") {
			out = append(out, l)
		}
	}
	return out
}

var services = []string{"skyjoin-ingest", "skyjoin-enrich", "skyjoin-serve", "skyjoin-deliver", "skyjoin-collect"}

func revision(name, created string, ready bool) map[string]any {
	status := "False"
	if ready {
		status = "True"
	}
	return map[string]any{
		"metadata": map[string]any{"name": name, "creationTimestamp": created},
		"status": map[string]any{"conditions": []any{
			map[string]any{"type": "ContainerHealthy", "status": "True"},
			map[string]any{"type": "Ready", "status": status},
		}},
	}
}

// TestRollback: each service goes back to the newest ready revision older
// than the one that takes its traffic (a failed revision in between is
// passed over), or to the revision named; --dry-run changes nothing.
func TestRollback(t *testing.T) {
	dir, env := fakeGcloud(t)
	for _, svc := range services {
		writeJSON(t, filepath.Join(dir, svc+".service.json"), map[string]any{"status": map[string]any{
			"latestReadyRevisionName": svc + "-00003",
			"traffic":                 []any{map[string]any{"revisionName": svc + "-00003", "percent": 100, "latestRevision": true}},
		}})
		writeJSON(t, filepath.Join(dir, svc+".revisions.json"), []any{
			revision(svc+"-00001", "2026-12-01T10:00:00Z", true),
			revision(svc+"-00003", "2026-12-01T12:00:00Z", true),
			revision(svc+"-00002", "2026-12-01T11:00:00Z", false),
		})
	}
	stdout, stderr, err := script(t, env, "rollback", "--project", "p", "--region", "europe-west1", "--dry-run")
	if err != nil {
		t.Fatalf("rollback --dry-run: %v\n%s", err, stderr)
	}
	if got := calls(t, dir); len(got) != 0 {
		t.Errorf("--dry-run changed traffic: %v", got)
	}
	if !strings.Contains(stdout, "skyjoin-serve: skyjoin-serve-00003 -> skyjoin-serve-00001") {
		t.Errorf("rollback --dry-run said:\n%s", stdout)
	}

	if _, stderr, err := script(t, env, "rollback", "--project", "p", "--region", "europe-west1"); err != nil {
		t.Fatalf("rollback: %v\n%s", err, stderr)
	}
	got := calls(t, dir)
	if len(got) != len(services) {
		t.Fatalf("calls %v, want one update-traffic per service", got)
	}
	for i, svc := range services {
		want := "run services update-traffic " + svc + " --project p --region europe-west1 --to-revisions " + svc + "-00001=100 --quiet"
		if got[i] != want {
			t.Errorf("call %d = %q, want %q", i, got[i], want)
		}
	}

	_, stderr, err = script(t, env, "rollback", "--project", "p", "--region", "r", "--service", "skyjoin-serve", "--revision", "skyjoin-serve-00002")
	if err == nil || !strings.Contains(stderr, "revision skyjoin-serve-00002 is not a ready revision of it") {
		t.Errorf("rollback to a failed revision: %v\n%s", err, stderr)
	}
	_, stderr, err = script(t, env, "rollback", "--region", "r", "--revision", "x")
	if err == nil || !strings.Contains(stderr, "--project: missing") || !strings.Contains(stderr, "--revision: give one --service with it") {
		t.Errorf("rollback without --project: %v\n%s", err, stderr)
	}

	// Nothing older than the revision serving now.
	writeJSON(t, filepath.Join(dir, "skyjoin-ingest.revisions.json"), []any{revision("skyjoin-ingest-00003", "2026-12-01T12:00:00Z", true)})
	_, stderr, err = script(t, env, "rollback", "--project", "p", "--region", "r", "--service", "skyjoin-ingest")
	if err == nil || !strings.Contains(stderr, "skyjoin-ingest: no ready revision before skyjoin-ingest-00003") {
		t.Errorf("rollback with one revision: %v\n%s", err, stderr)
	}
}

// TestDeploy: the image goes to every service by digest, and traffic to
// the latest revision; a tag, or a service Terraform has not created, is
// refused before anything changes.
func TestDeploy(t *testing.T) {
	dir, env := fakeGcloud(t)
	image := "europe-west1-docker.pkg.dev/p/skyjoin/skyjoin@sha256:" + strings.Repeat("ab", 32)
	_, stderr, err := script(t, env, "deploy", "--project", "p", "--region", "europe-west1", "--image", "europe-west1-docker.pkg.dev/p/skyjoin/skyjoin:latest")
	if err == nil || !strings.Contains(stderr, "--image: want REPOSITORY@sha256:DIGEST") {
		t.Errorf("deploy of a tag: %v\n%s", err, stderr)
	}
	for _, svc := range services[:4] {
		writeJSON(t, filepath.Join(dir, svc+".service.json"), map[string]any{})
	}
	_, stderr, err = script(t, env, "deploy", "--project", "p", "--region", "europe-west1", "--image", image)
	if err == nil || !strings.Contains(stderr, "no Cloud Run service skyjoin-collect in p/europe-west1: create it with tofu apply first") {
		t.Errorf("deploy with a service missing: %v\n%s", err, stderr)
	}
	if got := calls(t, dir); len(got) != 0 {
		t.Errorf("deploy changed services before refusing: %v", got)
	}
	writeJSON(t, filepath.Join(dir, "skyjoin-collect.service.json"), map[string]any{})
	if _, stderr, err := script(t, env, "deploy", "--project", "p", "--region", "europe-west1", "--image", image); err != nil {
		t.Fatalf("deploy: %v\n%s", err, stderr)
	}
	var want []string
	for _, svc := range services {
		want = append(want,
			"run services update "+svc+" --project p --region europe-west1 --image "+image+" --quiet",
			"run services update-traffic "+svc+" --project p --region europe-west1 --to-latest --quiet")
	}
	if got := calls(t, dir); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("deploy calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestPushImage pushes an OCI layout to a registry on loopback (crane's
// own, in memory) with scripts/push-image: the pushed digest is the
// layout's; promoting that reference copies it to another repository with
// the digest unchanged; a layout of two manifests is refused.
func TestPushImage(t *testing.T) {
	crane, stderr, err := script(t, nil, "crane")
	if err != nil {
		t.Fatalf("scripts/crane: %v\n%s", err, stderr)
	}
	crane = strings.TrimSpace(crane)
	addr := testbin.FreeAddr(t)
	reg := exec.Command(crane, "registry", "serve", "--address", addr)
	if err := reg.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Process.Kill(); reg.Wait() })
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get("http://" + addr + "/v2/"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("crane registry serve on %s did not answer within 30 s", addr)
		}
	}

	// A small image, pulled back as an OCI layout like scripts/image's.
	dir := t.TempDir()
	layer := filepath.Join(dir, "layer.tar")
	if err := os.WriteFile(layer, tarOf(t, "hello.txt", "hello from TestPushImage\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(crane, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("crane %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	run("append", "--oci-empty-base", "-f", layer, "-t", addr+"/base:1")
	layout := filepath.Join(dir, "layout")
	run("pull", "--format", "oci", addr+"/base:1", layout)
	want := run("digest", addr+"/base:1")

	env := []string{
		"SKYJOIN_IMAGE_LAYOUT=" + layout,
		"CLOUDSDK_CONFIG=" + t.TempDir(), // no gcloud account
		"GCE_METADATA_HOST=127.0.0.1:1",  // no metadata server
	}
	stdout, stderr, err := script(t, env, "push-image", addr+"/skyjoin/skyjoin", "abc123")
	if err != nil {
		t.Fatalf("push-image: %v\n%s", err, stderr)
	}
	ref := lastLine(stdout)
	if ref != addr+"/skyjoin/skyjoin@"+want {
		t.Fatalf("push-image printed %q, want the layout's digest %s", ref, want)
	}
	if got := run("digest", addr+"/skyjoin/skyjoin:abc123"); got != want {
		t.Errorf("the registry's abc123 is %s, want %s", got, want)
	}

	stdout, stderr, err = script(t, append(env, "SKYJOIN_IMAGE_FROM="+ref), "push-image", addr+"/staging/skyjoin", "abc123")
	if err != nil {
		t.Fatalf("push-image promoting %s: %v\n%s", ref, err, stderr)
	}
	if got := lastLine(stdout); got != addr+"/staging/skyjoin@"+want {
		t.Errorf("promoted to %q, want the same digest %s", got, want)
	}
	_, stderr, err = script(t, append(env, "SKYJOIN_IMAGE_FROM="+addr+"/skyjoin/skyjoin:abc123"), "push-image", addr+"/staging/skyjoin", "x")
	if err == nil || !strings.Contains(stderr, "is not an image by digest") {
		t.Errorf("promoting a tag: %v\n%s", err, stderr)
	}

	index, err := os.ReadFile(filepath.Join(layout, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var idx map[string]any
	if err := json.Unmarshal(index, &idx); err != nil {
		t.Fatal(err)
	}
	m := idx["manifests"].([]any)
	idx["manifests"] = append(m, m[0])
	writeJSON(t, filepath.Join(layout, "index.json"), idx)
	_, stderr, err = script(t, env, "push-image", addr+"/skyjoin/skyjoin", "two")
	if err == nil || !strings.Contains(stderr, "does not hold exactly one manifest") {
		t.Errorf("push-image of a layout of two manifests: %v\n%s", err, stderr)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// tarOf is a tar archive of one regular file.
func tarOf(t *testing.T, name, content string) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte(content)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
