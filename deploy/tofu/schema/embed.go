package schema

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
)

// Committed holds the pruned schema files, one per provider, as
// scripts/terraform-schema writes them: providers/NAME.json.
//
//go:embed providers
var Committed embed.FS

// Names lists the providers that have a committed schema file (google,
// google-beta).
func Names() ([]string, error) {
	entries, err := fs.ReadDir(Committed, "providers")
	if err != nil {
		return nil, fmt.Errorf("list committed schemas: %w", err)
	}
	var names []string
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".json"); ok {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names, nil
}

// Load reads the committed schema file of the named provider (google or
// google-beta).
func Load(name string) (*File, error) {
	data, err := Committed.ReadFile(path.Join("providers", name+".json"))
	if err != nil {
		names, _ := Names()
		return nil, fmt.Errorf("no committed schema for provider %q (have %s)", name, strings.Join(names, ", "))
	}
	return ParseFile(data)
}
