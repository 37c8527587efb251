// Command terraform-provider-schema serves a committed provider schema
// (deploy/tofu/schema/providers/NAME.json) to OpenTofu over plugin protocol
// 5, so that `tofu init` and `tofu validate` run offline against the real
// google and google-beta schemas. It is installed into a filesystem mirror
// as terraform-provider-NAME_vVERSION (scripts/terraform-check), and
// serves the schema that its file name names, at that version.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	"github.com/hashicorp/terraform-plugin-go/tfprotov5"
	"github.com/hashicorp/terraform-plugin-go/tfprotov5/tf5server"

	"github.com/skyjoin/skyjoin/deploy/tofu/provider"
	"github.com/skyjoin/skyjoin/deploy/tofu/schema"
)

func main() {
	if err := run(os.Args[0]); err != nil {
		fmt.Fprintln(os.Stderr, "terraform-provider-schema:", err)
		os.Exit(1)
	}
}

var exeName = regexp.MustCompile(`^terraform-provider-([a-z0-9-]+)_v(\d+\.\d+\.\d+)(\.exe)?$`)

func run(exe string) error {
	m := exeName.FindStringSubmatch(filepath.Base(exe))
	if m == nil {
		return fmt.Errorf("executable %q is not named terraform-provider-NAME_vVERSION: it serves the schema its name names", filepath.Base(exe))
	}
	f, err := schema.Load(m[1])
	if err != nil {
		return err
	}
	if f.Version != m[2] {
		return fmt.Errorf("executable %s names version %s, the committed schema of %s is %s", filepath.Base(exe), m[2], m[1], f.Version)
	}
	srv, err := provider.New(f)
	if err != nil {
		return err
	}
	return tf5server.Serve(f.Provider, func() tfprotov5.ProviderServer { return srv })
}
