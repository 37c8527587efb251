package schema

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// Used is the set of resource and data source types that configurations
// declare, each with the places (file:line) that declare it.
type Used struct {
	Resources   map[string][]string
	DataSources map[string][]string
}

// Scan reads every .tf file under the given directories (skipping .terraform
// directories) and collects the resource and data source types their
// resource, data and check blocks declare. A file that does not parse is an
// error; so is a .tf.json file or an ephemeral block, which this tooling
// does not read.
func Scan(dirs ...string) (*Used, error) {
	u := &Used{Resources: map[string][]string{}, DataSources: map[string][]string{}}
	var problems []error
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				if d.Name() == ".terraform" {
					return filepath.SkipDir
				}
				return nil
			}
			switch {
			case strings.HasSuffix(path, ".tf.json"):
				problems = append(problems, fmt.Errorf("%s: JSON configuration is not scanned; write it as .tf", path))
			case strings.HasSuffix(path, ".tf"):
				problems = append(problems, u.scanFile(path)...)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("scan %s: %w", dir, err)
		}
	}
	if err := errors.Join(problems...); err != nil {
		return nil, err
	}
	return u, nil
}

func (u *Used) scanFile(path string) []error {
	src, err := os.ReadFile(path)
	if err != nil {
		return []error{err}
	}
	f, diags := hclsyntax.ParseConfig(src, path, hcl.InitialPos)
	if diags.HasErrors() {
		return []error{diags}
	}
	var problems []error
	var walk func(body *hclsyntax.Body)
	walk = func(body *hclsyntax.Body) {
		for _, b := range body.Blocks {
			at := fmt.Sprintf("%s:%d", filepath.ToSlash(path), b.TypeRange.Start.Line)
			switch b.Type {
			case "resource":
				if len(b.Labels) == 2 {
					u.Resources[b.Labels[0]] = append(u.Resources[b.Labels[0]], at)
				}
			case "data":
				if len(b.Labels) == 2 {
					u.DataSources[b.Labels[0]] = append(u.DataSources[b.Labels[0]], at)
				}
			case "check":
				walk(b.Body)
			case "ephemeral":
				problems = append(problems, fmt.Errorf("%s: ephemeral blocks are not served by the schema provider", at))
			}
		}
	}
	walk(f.Body.(*hclsyntax.Body))
	return problems
}
