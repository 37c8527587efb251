package provider

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-go/tfprotov5"
	"github.com/hashicorp/terraform-plugin-go/tftypes"

	"github.com/skyjoin/skyjoin/deploy/tofu/schema"
)

// TestServesTheCommittedSchema: each committed schema is served whole, and
// every call that would need the real provider is refused with a
// diagnostic that says so.
func TestServesTheCommittedSchema(t *testing.T) {
	ctx := context.Background()
	names, err := schema.Names()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		f, err := schema.Load(name)
		if err != nil {
			t.Fatal(err)
		}
		srv, err := New(f)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := srv.GetProviderSchema(ctx, &tfprotov5.GetProviderSchemaRequest{})
		if err != nil || len(resp.Diagnostics) > 0 {
			t.Fatalf("%s: GetProviderSchema: %v %v", name, err, resp.Diagnostics)
		}
		if len(resp.ResourceSchemas) != len(f.Schema.ResourceSchemas) || len(resp.DataSourceSchemas) != len(f.Schema.DataSourceSchemas) {
			t.Errorf("%s: served %d resources and %d data sources, the file has %d and %d", name,
				len(resp.ResourceSchemas), len(resp.DataSourceSchemas), len(f.Schema.ResourceSchemas), len(f.Schema.DataSourceSchemas))
		}
		if resp.Provider == nil || resp.Provider.Block == nil {
			t.Errorf("%s: no provider schema", name)
		}
		meta, err := srv.GetMetadata(ctx, &tfprotov5.GetMetadataRequest{})
		if err != nil || len(meta.Resources) != len(resp.ResourceSchemas) {
			t.Errorf("%s: GetMetadata %v %+v", name, err, meta)
		}
		for typ := range resp.ResourceSchemas {
			if !slices.ContainsFunc(meta.Resources, func(m tfprotov5.ResourceMetadata) bool { return m.TypeName == typ }) {
				t.Errorf("%s: GetMetadata lacks %s", name, typ)
			}
		}

		config := &tfprotov5.DynamicValue{MsgPack: []byte{0x80}}
		prep, err := srv.PrepareProviderConfig(ctx, &tfprotov5.PrepareProviderConfigRequest{Config: config})
		if err != nil || prep.PreparedConfig != config || len(prep.Diagnostics) > 0 {
			t.Errorf("%s: PrepareProviderConfig: %v %+v", name, err, prep)
		}
		plan, err := srv.PlanResourceChange(ctx, &tfprotov5.PlanResourceChangeRequest{TypeName: "google_pubsub_topic"})
		if err != nil || len(plan.Diagnostics) != 1 || plan.Diagnostics[0].Severity != tfprotov5.DiagnosticSeverityError ||
			!strings.Contains(plan.Diagnostics[0].Summary, "planning needs the real provider") ||
			!strings.Contains(plan.Diagnostics[0].Detail, f.Provider+" "+f.Version) {
			t.Errorf("%s: PlanResourceChange: %v %+v", name, err, plan.Diagnostics)
		}
		conf, err := srv.ConfigureProvider(ctx, &tfprotov5.ConfigureProviderRequest{})
		if err != nil || len(conf.Diagnostics) != 1 {
			t.Errorf("%s: ConfigureProvider: %v %+v", name, err, conf)
		}
		call, err := srv.CallFunction(ctx, &tfprotov5.CallFunctionRequest{Name: "region_from_zone"})
		if err != nil || call.Error == nil || !strings.Contains(call.Error.Text, "provider::region_from_zone") {
			t.Errorf("%s: CallFunction: %v %+v", name, err, call)
		}
	}
}

// TestStateReadBack: state written at the committed schema (as `tofu test`
// with mocked providers writes it between runs) is read back unchanged,
// with no drift; state of another schema version, or that does not match
// the schema, is refused.
func TestStateReadBack(t *testing.T) {
	ctx := context.Background()
	f, err := schema.Load("google")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(f)
	if err != nil {
		t.Fatal(err)
	}
	const typ = "google_pubsub_topic"
	rs := srv.schema.ResourceSchemas[typ]
	if rs == nil {
		t.Fatalf("no %s in the committed schema", typ)
	}
	raw := &tfprotov5.RawState{JSON: []byte(`{"id":"projects/p/topics/events","name":"events","project":"p"}`)}
	up, err := srv.UpgradeResourceState(ctx, &tfprotov5.UpgradeResourceStateRequest{TypeName: typ, Version: rs.Version, RawState: raw})
	if err != nil || len(up.Diagnostics) > 0 || up.UpgradedState == nil {
		t.Fatalf("UpgradeResourceState: %v %v", err, up.Diagnostics)
	}
	v, err := up.UpgradedState.Unmarshal(rs.ValueType())
	if err != nil {
		t.Fatal(err)
	}
	var attrs map[string]tftypes.Value
	if err := v.As(&attrs); err != nil {
		t.Fatal(err)
	}
	var name string
	if err := attrs["name"].As(&name); err != nil || name != "events" {
		t.Errorf("name read back as %q (%v)", name, err)
	}
	read, err := srv.ReadResource(ctx, &tfprotov5.ReadResourceRequest{TypeName: typ, CurrentState: up.UpgradedState})
	if err != nil || len(read.Diagnostics) > 0 || read.NewState != up.UpgradedState {
		t.Errorf("ReadResource: %v %v, want the state unchanged", err, read.Diagnostics)
	}
	for _, bad := range []*tfprotov5.UpgradeResourceStateRequest{
		{TypeName: typ, Version: rs.Version + 1, RawState: raw},
		{TypeName: typ, Version: rs.Version, RawState: &tfprotov5.RawState{JSON: []byte(`{"name":["not","a","string"]}`)}},
		{TypeName: "google_no_such_thing", RawState: raw},
	} {
		if r, err := srv.UpgradeResourceState(ctx, bad); err != nil || len(r.Diagnostics) == 0 {
			t.Errorf("UpgradeResourceState(%s v%d %s) accepted", bad.TypeName, bad.Version, bad.RawState.JSON)
		}
	}
}
