// Package delivery tests the delivery pipeline's files without a cloud:
// that what the GitHub workflows and cloudbuild.yaml run exists in the
// repository, that the workflows keep their shape (tests before any
// deployment, dev -> staging -> prod, Workload Identity Federation and no
// keys), and the scripts they run: the smoke test against a real skyjoin,
// the rollback and the deploy against a fake gcloud.
package delivery

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

const root = "../.."

// workflowFiles are the files whose references are checked.
func workflowFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, ".github/workflows/*.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 3 {
		t.Fatalf("workflows %v: want ci.yml, deploy.yml and deploy-env.yml at least", files)
	}
	return append(files, filepath.Join(root, "cloudbuild.yaml"))
}

// strings of a YAML document: every scalar value.
func scalars(n *yaml.Node, out *[]string) {
	if n.Kind == yaml.ScalarNode {
		*out = append(*out, n.Value)
	}
	for _, c := range n.Content {
		scalars(c, out)
	}
}

// repoPath matches a path of this repository in a command line or a uses:.
// A script's ./path is relative to a directory it changed to, and is
// left out; a workflow's ./path (uses: ./.github/...) is the repository's.
var repoPath = regexp.MustCompile(`(?:^|[\s"'=(:])(\./)?((?:scripts|deploy|dataflow|cmd|internal|docs|test|\.github)/[A-Za-z0-9_.*/-]*[A-Za-z0-9_*])`)

// fromOtherBranches are directories and files that other branches of the
// same change bring: while one is absent, references into it are listed,
// not failed; once it exists they must resolve like any other.
var fromOtherBranches = []string{"dataflow/", "deploy/terraform/", "docs/deploy.md"}

func references(t *testing.T, file string) []string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	yamlFile := strings.HasSuffix(file, ".yml") || strings.HasSuffix(file, ".yaml")
	if yamlFile {
		var doc yaml.Node
		if err := yaml.Unmarshal(data, &doc); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		scalars(&doc, &texts)
	} else {
		for line := range strings.Lines(string(data)) {
			if !strings.HasPrefix(strings.TrimSpace(line), "#") {
				texts = append(texts, line)
			}
		}
	}
	var refs []string
	for _, text := range texts {
		for _, m := range repoPath.FindAllStringSubmatch(text, -1) {
			if m[1] == "" || yamlFile {
				refs = append(refs, m[2])
			}
		}
	}
	slices.Sort(refs)
	return slices.Compact(refs)
}

// TestReferencedFilesExist: every script and file that the workflows and
// cloudbuild.yaml name, and that the scripts they run name in turn, is in
// the repository (a pattern matches something); scripts are executable.
func TestReferencedFilesExist(t *testing.T) {
	type ref struct{ path, by string }
	var refs []ref
	seen := map[string]bool{}
	queue := workflowFiles(t)
	for len(queue) > 0 {
		file := queue[0]
		queue = queue[1:]
		rel, _ := filepath.Rel(root, file)
		for _, p := range references(t, file) {
			refs = append(refs, ref{p, rel})
			if strings.HasPrefix(p, "scripts/") && !seen[p] {
				seen[p] = true
				if _, err := os.Stat(filepath.Join(root, p)); err == nil {
					queue = append(queue, filepath.Join(root, p))
				}
			}
		}
	}
	var checked, pending []string
	for _, r := range refs {
		if strings.Contains(r.path, "*") {
			if m, _ := filepath.Glob(filepath.Join(root, r.path)); len(m) > 0 {
				checked = append(checked, r.path)
				continue
			}
		} else if st, err := os.Stat(filepath.Join(root, r.path)); err == nil {
			if strings.HasPrefix(r.path, "scripts/") && st.Mode()&0o111 == 0 {
				t.Errorf("%s (run by %s) is not executable", r.path, r.by)
			}
			checked = append(checked, r.path)
			continue
		}
		other := slices.ContainsFunc(fromOtherBranches, func(dir string) bool {
			if !strings.HasPrefix(r.path, dir) && r.path != strings.TrimSuffix(dir, "/") {
				return false
			}
			_, err := os.Stat(filepath.Join(root, dir))
			return err != nil
		})
		if other {
			pending = append(pending, r.path+" (named by "+r.by+")")
			continue
		}
		t.Errorf("%s names %s, which is not in the repository", r.by, r.path)
	}
	if len(checked) < 10 {
		t.Errorf("only %d references found: %v", len(checked), checked)
	}
	slices.Sort(pending)
	if len(pending) > 0 {
		t.Logf("not on this branch yet, checked once their directory exists:\n  %s", strings.Join(slices.Compact(pending), "\n  "))
	}
}

type workflow struct {
	On   yaml.Node `yaml:"on"`
	Jobs map[string]struct {
		Needs       any            `yaml:"needs"`
		Uses        string         `yaml:"uses"`
		Environment string         `yaml:"environment"`
		With        map[string]any `yaml:"with"`
		Permissions map[string]any `yaml:"permissions"`
		Steps       []struct {
			Uses string            `yaml:"uses"`
			Run  string            `yaml:"run"`
			With map[string]string `yaml:"with"`
		} `yaml:"steps"`
	} `yaml:"jobs"`
}

func readWorkflow(t *testing.T, name string) *workflow {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, ".github/workflows", name))
	if err != nil {
		t.Fatal(err)
	}
	var w workflow
	if err := yaml.Unmarshal(data, &w); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return &w
}

func needs(v any) []string {
	switch n := v.(type) {
	case string:
		return []string{n}
	case []any:
		var out []string
		for _, x := range n {
			out = append(out, x.(string))
		}
		return out
	}
	return nil
}

// TestWorkflowShape: CI runs the README's test command; deploy.yml tests
// before it builds, deploys dev, then staging, then prod, each through
// deploy-env.yml in its own GitHub environment (prod's approval is that
// environment's rule); every Google credential comes from Workload
// Identity Federation, never from a key.
func TestWorkflowShape(t *testing.T) {
	ci := readWorkflow(t, "ci.yml")
	var runs []string
	for _, job := range ci.Jobs {
		for _, s := range job.Steps {
			runs = append(runs, strings.TrimSpace(s.Run))
		}
	}
	if !slices.Contains(runs, "scripts/test") {
		t.Errorf("ci.yml does not run scripts/test: %q", runs)
	}

	deploy := readWorkflow(t, "deploy.yml")
	if j := deploy.Jobs["test"]; j.Uses != "./.github/workflows/ci.yml" {
		t.Errorf("deploy.yml's test job uses %q, want ci.yml", j.Uses)
	}
	for job, want := range map[string][]string{"build": {"test"}, "dev": {"build"}, "staging": {"build", "dev"}, "prod": {"build", "staging"}} {
		j, ok := deploy.Jobs[job]
		if !ok {
			t.Errorf("deploy.yml has no job %s", job)
			continue
		}
		if got := needs(j.Needs); !slices.Equal(got, want) {
			t.Errorf("deploy.yml job %s needs %v, want %v", job, got, want)
		}
		if job == "build" {
			continue
		}
		if j.Uses != "./.github/workflows/deploy-env.yml" || j.With["environment"] != job {
			t.Errorf("deploy.yml job %s: uses %q with environment %v", job, j.Uses, j.With["environment"])
		}
		if j.Permissions["id-token"] != "write" {
			t.Errorf("deploy.yml job %s cannot request an OIDC token: %v", job, j.Permissions)
		}
	}
	env := readWorkflow(t, "deploy-env.yml")
	if env.Jobs["deploy"].Environment != "${{ inputs.environment }}" {
		t.Errorf("deploy-env.yml's job runs in environment %q", env.Jobs["deploy"].Environment)
	}
	auths := 0
	for _, name := range []string{"deploy.yml", "deploy-env.yml"} {
		for jobName, job := range readWorkflow(t, name).Jobs {
			for _, s := range job.Steps {
				if !strings.HasPrefix(s.Uses, "google-github-actions/auth@") {
					continue
				}
				auths++
				if s.With["workload_identity_provider"] == "" || s.With["service_account"] == "" {
					t.Errorf("%s job %s: auth without workload_identity_provider and service_account: %v", name, jobName, s.With)
				}
				if _, ok := s.With["credentials_json"]; ok {
					t.Errorf("%s job %s: a service account key (credentials_json)", name, jobName)
				}
			}
		}
	}
	if auths < 3 {
		t.Errorf("%d auth steps, want the deployment's, its two ID tokens' and the rollback's", auths)
	}
}
