package schema

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-go/tfprotov5"
	"github.com/hashicorp/terraform-plugin-go/tftypes"
)

func TestParseType(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want tftypes.Type
		err  string
	}{
		{in: `"string"`, want: tftypes.String},
		{in: `"number"`, want: tftypes.Number},
		{in: `"bool"`, want: tftypes.Bool},
		{in: `"dynamic"`, want: tftypes.DynamicPseudoType},
		{in: `["list","string"]`, want: tftypes.List{ElementType: tftypes.String}},
		{in: `["set",["map","number"]]`, want: tftypes.Set{ElementType: tftypes.Map{ElementType: tftypes.Number}}},
		{in: `["object",{"a":"string","b":["list","bool"]}]`, want: tftypes.Object{AttributeTypes: map[string]tftypes.Type{
			"a": tftypes.String, "b": tftypes.List{ElementType: tftypes.Bool}}}},
		{in: `["object",{"a":"string","b":"number"},["b"]]`, want: tftypes.Object{
			AttributeTypes:     map[string]tftypes.Type{"a": tftypes.String, "b": tftypes.Number},
			OptionalAttributes: map[string]struct{}{"b": {}}}},
		{in: `["tuple",["string","number"]]`, want: tftypes.Tuple{ElementTypes: []tftypes.Type{tftypes.String, tftypes.Number}}},
		{in: `"strin"`, err: `unknown primitive type "strin"`},
		{in: `["list"]`, err: "not a type name"},
		{in: `["list","string","number"]`, err: "list takes one element type"},
		{in: `["vector","string"]`, err: `unknown kind "vector"`},
		{in: `["object",{"a":"string"},["b"]]`, err: `optional attribute "b" is not an attribute`},
		{in: `["object",{"a":"nope"}]`, err: "object attribute a: unknown primitive type"},
		{in: ``, err: "no type"},
		{in: `42`, err: "not a type name"},
	} {
		got, err := ParseType(json.RawMessage(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseType(%s) = %v, %v; want error containing %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("ParseType(%s) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

const sample = `{
 "provider": {"version": 0, "block": {"attributes": {"project": {"type": "string", "optional": true, "description": "The project."}}}},
 "resource_schemas": {
  "google_pubsub_topic": {"version": 1, "block": {
   "attributes": {
    "name": {"type": "string", "required": true, "description": "Name."},
    "labels": {"type": ["map","string"], "optional": true},
    "id": {"type": "string", "optional": true, "computed": true}
   },
   "block_types": {
    "schema_settings": {"nesting_mode": "list", "max_items": 1, "block": {
     "attributes": {"schema": {"type": "string", "required": true, "description": "x"}}}}
   },
   "description": "A topic."}},
  "google_storage_bucket": {"version": 0, "block": {"attributes": {"name": {"type": "string", "required": true}}}}
 },
 "data_source_schemas": {
  "google_project": {"version": 0, "block": {"attributes": {"project_id": {"type": "string", "optional": true, "computed": true}}}},
  "google_client_config": {"version": 0, "block": {"attributes": {"id": {"type": "string", "computed": true}}}}
 },
 "functions": {
  "region_from_zone": {"description": "d", "summary": "s", "return_type": "string",
   "parameters": [{"name": "zone", "description": "z", "type": "string"}]}
 }
}`

func sampleProvider(t *testing.T) *Provider {
	t.Helper()
	var p Provider
	if err := json.Unmarshal([]byte(sample), &p); err != nil {
		t.Fatal(err)
	}
	return &p
}

func TestConvert(t *testing.T) {
	p, err := Convert(sampleProvider(t))
	if err != nil {
		t.Fatal(err)
	}
	topic := p.ResourceSchemas["google_pubsub_topic"]
	if topic == nil || topic.Version != 1 {
		t.Fatalf("google_pubsub_topic = %+v", topic)
	}
	var names []string
	for _, a := range topic.Block.Attributes {
		names = append(names, a.Name)
	}
	if want := []string{"id", "labels", "name"}; !slices.Equal(names, want) {
		t.Errorf("attributes %v, want %v (sorted)", names, want)
	}
	name := topic.Block.Attributes[2]
	if !name.Required || name.Optional || !name.Type.Equal(tftypes.String) {
		t.Errorf("name = %+v", name)
	}
	if id := topic.Block.Attributes[0]; !id.Optional || !id.Computed {
		t.Errorf("id = %+v", id)
	}
	if len(topic.Block.BlockTypes) != 1 {
		t.Fatalf("block types %+v", topic.Block.BlockTypes)
	}
	bt := topic.Block.BlockTypes[0]
	if bt.TypeName != "schema_settings" || bt.Nesting != tfprotov5.SchemaNestedBlockNestingModeList || bt.MaxItems != 1 || bt.Block.Attributes[0].Name != "schema" {
		t.Errorf("schema_settings = %+v", bt)
	}
	if fn := p.Functions["region_from_zone"]; fn == nil || len(fn.Parameters) != 1 || !fn.Return.Type.Equal(tftypes.String) {
		t.Errorf("function = %+v", fn)
	}
	if p.Provider.Block.Attributes[0].Name != "project" {
		t.Errorf("provider block = %+v", p.Provider.Block)
	}
}

func TestConvertNamesWhatItCannotConvert(t *testing.T) {
	for _, tc := range []struct {
		edit func(p *Provider)
		want string
	}{
		{func(p *Provider) {
			p.ResourceSchemas["google_pubsub_topic"].Block.BlockTypes["schema_settings"].Block.Attributes["schema"].Type = json.RawMessage(`"text"`)
		}, `resource google_pubsub_topic.schema_settings.schema: unknown primitive type "text"`},
		{func(p *Provider) {
			p.ResourceSchemas["google_pubsub_topic"].Block.BlockTypes["schema_settings"].NestingMode = "bag"
		}, `resource google_pubsub_topic.schema_settings: unknown nesting_mode "bag"`},
		{func(p *Provider) {
			p.DataSourceSchemas["google_project"].Block.Attributes["project_id"].NestedType = json.RawMessage(`{"attributes":{}}`)
		}, "data source google_project.project_id: a nested attribute type"},
		{func(p *Provider) { p.Provider = nil }, "provider: no block"},
		{func(p *Provider) {
			p.Functions["region_from_zone"].Parameters[0].Type = json.RawMessage(`"zone"`)
		}, "function region_from_zone: parameter zone"},
	} {
		p := sampleProvider(t)
		tc.edit(p)
		if _, err := Convert(p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Convert: %v; want an error containing %q", err, tc.want)
		}
	}
}

func TestPrune(t *testing.T) {
	used := &Used{
		Resources:   map[string][]string{"google_pubsub_topic": {"a.tf:1"}, "google_dataflow_flex_template_job": {"a.tf:9"}},
		DataSources: map[string][]string{"google_project": {"a.tf:5"}},
	}
	p := Prune(sampleProvider(t), used)
	if got := slices.Sorted(maps.Keys(p.ResourceSchemas)); !slices.Equal(got, []string{"google_pubsub_topic"}) {
		t.Errorf("resources %v", got)
	}
	if got := slices.Sorted(maps.Keys(p.DataSourceSchemas)); !slices.Equal(got, []string{"google_project"}) {
		t.Errorf("data sources %v", got)
	}
	data, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"The project.", "A topic.", `"z"`} {
		if strings.Contains(string(data), d) {
			t.Errorf("description %s kept in %s", d, data)
		}
	}
	if p.ResourceSchemas["google_pubsub_topic"].Block.BlockTypes["schema_settings"].MaxItems != 1 {
		t.Error("prune lost max_items")
	}
	if missing := Missing(used, p); !slices.Equal(missing, []string{"resource type google_dataflow_flex_template_job (a.tf:9)"}) {
		t.Errorf("Missing = %v", missing)
	}
	beta := &Provider{ResourceSchemas: map[string]*Schema{"google_dataflow_flex_template_job": {}}}
	if missing := Missing(used, p, beta); len(missing) != 0 {
		t.Errorf("Missing with beta = %v", missing)
	}
	if unused := Unused(&Used{Resources: map[string][]string{"google_pubsub_topic": nil}}, p); !slices.Equal(unused, []string{"data source type google_project"}) {
		t.Errorf("Unused = %v", unused)
	}
}

func write(t *testing.T, dir, name, text string) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestScan(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "envs/dev/main.tf", `
module "x" { source = "../../modules/x" }
resource "google_pubsub_topic" "events" { name = "e" }
data "google_project" "this" {}
`)
	write(t, dir, "modules/x/main.tf", `
resource "google_pubsub_topic" "dl" { name = "d" }
resource "google_dataflow_flex_template_job" "job" {
  provider = google-beta
}
check "up" {
  data "google_cloud_run_v2_service" "serve" { name = "s" }
  assert {
    condition     = true
    error_message = "x"
  }
}
`)
	write(t, dir, "envs/dev/.terraform/modules/y/main.tf", `resource "google_not_scanned" "x" {}`)
	u, err := Scan(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := slices.Sorted(maps.Keys(u.Resources)); !slices.Equal(got, []string{"google_dataflow_flex_template_job", "google_pubsub_topic"}) {
		t.Errorf("resources %v", got)
	}
	if got := slices.Sorted(maps.Keys(u.DataSources)); !slices.Equal(got, []string{"google_cloud_run_v2_service", "google_project"}) {
		t.Errorf("data sources %v", got)
	}
	if at := u.Resources["google_pubsub_topic"]; len(at) != 2 || !strings.HasSuffix(at[0], "envs/dev/main.tf:3") {
		t.Errorf("google_pubsub_topic at %v", at)
	}

	write(t, dir, "modules/bad/main.tf", `resource "google_pubsub_topic" "x" {`)
	write(t, dir, "modules/eph/main.tf", `ephemeral "google_service_account_access_token" "t" {}`)
	write(t, dir, "modules/json/main.tf.json", `{}`)
	_, err = Scan(dir)
	for _, want := range []string{"modules/bad/main.tf:1", "ephemeral blocks are not served", "main.tf.json: JSON configuration is not scanned"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Scan of broken files: %v; want %q", err, want)
		}
	}
}

// TestCommittedSchemasMatchTheConfiguration holds the committed schemas to
// the .tf files: every resource and data source type used under
// deploy/terraform (and by this module's fixture) has a committed schema,
// and no committed schema is of a type nothing uses.
func TestCommittedSchemasMatchTheConfiguration(t *testing.T) {
	dirs := []string{"../testdata"}
	if _, err := os.Stat("../../terraform"); err == nil {
		dirs = append(dirs, "../../terraform")
	}
	used, err := Scan(dirs...)
	if err != nil {
		t.Fatal(err)
	}
	names, err := Names()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names, []string{"google", "google-beta"}) {
		t.Fatalf("committed schemas %v, want google and google-beta", names)
	}
	var providers []*Provider
	version := ""
	for _, name := range names {
		f, err := Load(name)
		if err != nil {
			t.Fatal(err)
		}
		if f.Provider != "registry.opentofu.org/hashicorp/"+name {
			t.Errorf("%s.json is of %s", name, f.Provider)
		}
		if version != "" && f.Version != version {
			t.Errorf("%s is at %s, the other provider at %s: take both from one release", name, f.Version, version)
		}
		version = f.Version
		providers = append(providers, &f.Schema)
	}
	const regen = "\nregenerate with scripts/terraform-schema (docs/ci.md)"
	if missing := Missing(used, providers...); len(missing) > 0 {
		t.Errorf("types with no committed schema:\n  %s%s", strings.Join(missing, "\n  "), regen)
	}
	if unused := Unused(used, providers...); len(unused) > 0 {
		t.Errorf("committed schemas of types nothing uses:\n  %s%s", strings.Join(unused, "\n  "), regen)
	}
}
