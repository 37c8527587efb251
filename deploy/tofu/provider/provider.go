// Package provider is a plugin-protocol-5 provider server that serves a
// committed schema (package schema) and nothing else: enough for `tofu
// init` and `tofu validate`, which check a configuration against the
// provider's schema (argument names, types, required arguments, block
// nesting) without configuring the provider, and for `tofu test` with
// mocked providers, which needs the schema and reads its own state back
// (UpgradeResourceState passes state of this schema version on, and
// ReadResource reports no drift). Every call that would need the real
// provider (configure, plan, apply, import, functions) is answered with an
// error diagnostic that says so.
package provider

import (
	"context"
	"maps"
	"slices"

	"github.com/hashicorp/terraform-plugin-go/tfprotov5"
	"github.com/hashicorp/terraform-plugin-go/tftypes"

	"github.com/skyjoin/skyjoin/deploy/tofu/schema"
)

// Server serves one provider's committed schema.
type Server struct {
	name   string
	schema *schema.Protocol
}

var _ tfprotov5.ProviderServer = (*Server)(nil)

// New converts f into a Server.
func New(f *schema.File) (*Server, error) {
	p, err := schema.Convert(&f.Schema)
	if err != nil {
		return nil, err
	}
	return &Server{name: f.Provider + " " + f.Version, schema: p}, nil
}

func (s *Server) refuse(what string) []*tfprotov5.Diagnostic {
	return []*tfprotov5.Diagnostic{{
		Severity: tfprotov5.DiagnosticSeverityError,
		Summary:  "Schema-only provider: " + what + " needs the real provider",
		Detail: "This is the schema of " + s.name + " served for offline `tofu validate` " +
			"(deploy/tofu, scripts/terraform-check). It validates configuration only; " +
			"run plan and apply with the real provider from the registry.",
	}}
}

func (s *Server) capabilities() *tfprotov5.ServerCapabilities {
	return &tfprotov5.ServerCapabilities{PlanDestroy: true}
}

// GetMetadata lists the types the committed schema has.
func (s *Server) GetMetadata(context.Context, *tfprotov5.GetMetadataRequest) (*tfprotov5.GetMetadataResponse, error) {
	resp := &tfprotov5.GetMetadataResponse{ServerCapabilities: s.capabilities()}
	for _, t := range slices.Sorted(maps.Keys(s.schema.ResourceSchemas)) {
		resp.Resources = append(resp.Resources, tfprotov5.ResourceMetadata{TypeName: t})
	}
	for _, t := range slices.Sorted(maps.Keys(s.schema.DataSourceSchemas)) {
		resp.DataSources = append(resp.DataSources, tfprotov5.DataSourceMetadata{TypeName: t})
	}
	for _, name := range slices.Sorted(maps.Keys(s.schema.Functions)) {
		resp.Functions = append(resp.Functions, tfprotov5.FunctionMetadata{Name: name})
	}
	return resp, nil
}

// GetProviderSchema returns the committed schema.
func (s *Server) GetProviderSchema(context.Context, *tfprotov5.GetProviderSchemaRequest) (*tfprotov5.GetProviderSchemaResponse, error) {
	return &tfprotov5.GetProviderSchemaResponse{
		ServerCapabilities: s.capabilities(),
		Provider:           s.schema.Provider,
		ResourceSchemas:    s.schema.ResourceSchemas,
		DataSourceSchemas:  s.schema.DataSourceSchemas,
		Functions:          s.schema.Functions,
	}, nil
}

// GetResourceIdentitySchemas returns none: the schema files carry no
// resource identities.
func (s *Server) GetResourceIdentitySchemas(context.Context, *tfprotov5.GetResourceIdentitySchemasRequest) (*tfprotov5.GetResourceIdentitySchemasResponse, error) {
	return &tfprotov5.GetResourceIdentitySchemasResponse{}, nil
}

// PrepareProviderConfig accepts the provider block as tofu checked it
// against the schema.
func (s *Server) PrepareProviderConfig(_ context.Context, req *tfprotov5.PrepareProviderConfigRequest) (*tfprotov5.PrepareProviderConfigResponse, error) {
	return &tfprotov5.PrepareProviderConfigResponse{PreparedConfig: req.Config}, nil
}

// ValidateResourceTypeConfig adds nothing to tofu's own check of the
// configuration against the schema: the real provider's value validators
// (enumerations, formats) are code, not schema.
func (s *Server) ValidateResourceTypeConfig(context.Context, *tfprotov5.ValidateResourceTypeConfigRequest) (*tfprotov5.ValidateResourceTypeConfigResponse, error) {
	return &tfprotov5.ValidateResourceTypeConfigResponse{}, nil
}

// ValidateDataSourceConfig: as ValidateResourceTypeConfig.
func (s *Server) ValidateDataSourceConfig(context.Context, *tfprotov5.ValidateDataSourceConfigRequest) (*tfprotov5.ValidateDataSourceConfigResponse, error) {
	return &tfprotov5.ValidateDataSourceConfigResponse{}, nil
}

// StopProvider has nothing to stop.
func (s *Server) StopProvider(context.Context, *tfprotov5.StopProviderRequest) (*tfprotov5.StopProviderResponse, error) {
	return &tfprotov5.StopProviderResponse{}, nil
}

// GetFunctions returns the committed function signatures.
func (s *Server) GetFunctions(context.Context, *tfprotov5.GetFunctionsRequest) (*tfprotov5.GetFunctionsResponse, error) {
	return &tfprotov5.GetFunctionsResponse{Functions: s.schema.Functions}, nil
}

// ConfigureProvider and every call below need the real provider.
func (s *Server) ConfigureProvider(context.Context, *tfprotov5.ConfigureProviderRequest) (*tfprotov5.ConfigureProviderResponse, error) {
	return &tfprotov5.ConfigureProviderResponse{Diagnostics: s.refuse("configuring the provider")}, nil
}

// UpgradeResourceState decodes state written at this very schema (as
// `tofu test` with mock providers writes it between its runs) and passes
// it on unchanged; state of another schema version needs the real
// provider's upgraders.
func (s *Server) UpgradeResourceState(_ context.Context, req *tfprotov5.UpgradeResourceStateRequest) (*tfprotov5.UpgradeResourceStateResponse, error) {
	rs, ok := s.schema.ResourceSchemas[req.TypeName]
	if !ok || req.RawState == nil || req.Version != rs.Version {
		return &tfprotov5.UpgradeResourceStateResponse{Diagnostics: s.refuse("upgrading state of another schema version")}, nil
	}
	typ := rs.ValueType()
	v, err := req.RawState.UnmarshalWithOpts(typ, tfprotov5.UnmarshalOpts{ValueFromJSONOpts: tftypes.ValueFromJSONOpts{IgnoreUndefinedAttributes: false}})
	if err != nil {
		return &tfprotov5.UpgradeResourceStateResponse{Diagnostics: []*tfprotov5.Diagnostic{{
			Severity: tfprotov5.DiagnosticSeverityError, Summary: "Schema-only provider: state does not match the schema", Detail: err.Error()}}}, nil
	}
	dv, err := tfprotov5.NewDynamicValue(typ, v)
	if err != nil {
		return nil, err
	}
	return &tfprotov5.UpgradeResourceStateResponse{UpgradedState: &dv}, nil
}

// ReadResource reports the resource as its state says: the schema-only
// provider sees no remote, so it sees no drift (`tofu test` with mock
// providers refreshes between runs). Plan and apply still refuse.
func (s *Server) ReadResource(_ context.Context, req *tfprotov5.ReadResourceRequest) (*tfprotov5.ReadResourceResponse, error) {
	return &tfprotov5.ReadResourceResponse{NewState: req.CurrentState, Private: req.Private}, nil
}

func (s *Server) PlanResourceChange(context.Context, *tfprotov5.PlanResourceChangeRequest) (*tfprotov5.PlanResourceChangeResponse, error) {
	return &tfprotov5.PlanResourceChangeResponse{Diagnostics: s.refuse("planning")}, nil
}

func (s *Server) ApplyResourceChange(context.Context, *tfprotov5.ApplyResourceChangeRequest) (*tfprotov5.ApplyResourceChangeResponse, error) {
	return &tfprotov5.ApplyResourceChangeResponse{Diagnostics: s.refuse("applying")}, nil
}

func (s *Server) ImportResourceState(context.Context, *tfprotov5.ImportResourceStateRequest) (*tfprotov5.ImportResourceStateResponse, error) {
	return &tfprotov5.ImportResourceStateResponse{Diagnostics: s.refuse("importing")}, nil
}

func (s *Server) MoveResourceState(context.Context, *tfprotov5.MoveResourceStateRequest) (*tfprotov5.MoveResourceStateResponse, error) {
	return &tfprotov5.MoveResourceStateResponse{Diagnostics: s.refuse("moving state")}, nil
}

func (s *Server) UpgradeResourceIdentity(context.Context, *tfprotov5.UpgradeResourceIdentityRequest) (*tfprotov5.UpgradeResourceIdentityResponse, error) {
	return &tfprotov5.UpgradeResourceIdentityResponse{Diagnostics: s.refuse("reading identities")}, nil
}

func (s *Server) GenerateResourceConfig(context.Context, *tfprotov5.GenerateResourceConfigRequest) (*tfprotov5.GenerateResourceConfigResponse, error) {
	return &tfprotov5.GenerateResourceConfigResponse{Diagnostics: s.refuse("generating configuration")}, nil
}

func (s *Server) ReadDataSource(context.Context, *tfprotov5.ReadDataSourceRequest) (*tfprotov5.ReadDataSourceResponse, error) {
	return &tfprotov5.ReadDataSourceResponse{Diagnostics: s.refuse("reading a data source")}, nil
}

func (s *Server) CallFunction(_ context.Context, req *tfprotov5.CallFunctionRequest) (*tfprotov5.CallFunctionResponse, error) {
	d := s.refuse("calling provider::" + req.Name)[0]
	return &tfprotov5.CallFunctionResponse{Error: &tfprotov5.FunctionError{Text: d.Summary + ". " + d.Detail}}, nil
}

func (s *Server) ValidateEphemeralResourceConfig(context.Context, *tfprotov5.ValidateEphemeralResourceConfigRequest) (*tfprotov5.ValidateEphemeralResourceConfigResponse, error) {
	return &tfprotov5.ValidateEphemeralResourceConfigResponse{Diagnostics: s.refuse("an ephemeral resource")}, nil
}

func (s *Server) OpenEphemeralResource(context.Context, *tfprotov5.OpenEphemeralResourceRequest) (*tfprotov5.OpenEphemeralResourceResponse, error) {
	return &tfprotov5.OpenEphemeralResourceResponse{Diagnostics: s.refuse("an ephemeral resource")}, nil
}

func (s *Server) RenewEphemeralResource(context.Context, *tfprotov5.RenewEphemeralResourceRequest) (*tfprotov5.RenewEphemeralResourceResponse, error) {
	return &tfprotov5.RenewEphemeralResourceResponse{Diagnostics: s.refuse("an ephemeral resource")}, nil
}

func (s *Server) CloseEphemeralResource(context.Context, *tfprotov5.CloseEphemeralResourceRequest) (*tfprotov5.CloseEphemeralResourceResponse, error) {
	return &tfprotov5.CloseEphemeralResourceResponse{Diagnostics: s.refuse("an ephemeral resource")}, nil
}
