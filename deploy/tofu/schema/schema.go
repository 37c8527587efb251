// Package schema holds what `tofu validate` needs to know of the google and
// google-beta providers: the schema of every resource and data source type
// that deploy/terraform uses, pruned from `tofu providers schema -json` of
// the real providers (scripts/terraform-schema), and its conversion to the
// plugin protocol (version 5, the protocol the google providers speak).
package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// File is one committed schema file: the pruned schema of one provider at
// one version.
type File struct {
	// Provider is the provider's source address as OpenTofu names it,
	// registry.opentofu.org/hashicorp/google.
	Provider string `json:"provider"`
	// Version is the real provider's version the schema was taken from;
	// the schema provider is offered to tofu under the same version.
	Version string `json:"version"`
	// Source says where the real provider was built from.
	Source string `json:"source"`
	// Tofu is the version of OpenTofu that printed the schema.
	Tofu   string   `json:"tofu"`
	Schema Provider `json:"schema"`
}

// Provider is one provider's entry of `tofu providers schema -json`
// (OpenTofu's internal/command/jsonprovider format).
type Provider struct {
	Provider          *Schema              `json:"provider,omitempty"`
	ResourceSchemas   map[string]*Schema   `json:"resource_schemas,omitempty"`
	DataSourceSchemas map[string]*Schema   `json:"data_source_schemas,omitempty"`
	Functions         map[string]*Function `json:"functions,omitempty"`
}

// Schema is the schema of a provider's configuration, a resource type or a
// data source type.
type Schema struct {
	Version uint64 `json:"version"`
	Block   *Block `json:"block,omitempty"`
}

// Block is a configuration block: its attributes and nested blocks.
type Block struct {
	Attributes      map[string]*Attribute `json:"attributes,omitempty"`
	BlockTypes      map[string]*BlockType `json:"block_types,omitempty"`
	Description     string                `json:"description,omitempty"`
	DescriptionKind string                `json:"description_kind,omitempty"`
	Deprecated      bool                  `json:"deprecated,omitempty"`
}

// Attribute is one argument or attribute of a block.
type Attribute struct {
	// Type is a cty type in its JSON form: "string", ["list","string"],
	// ["object",{"a":"number"},["a"]].
	Type json.RawMessage `json:"type,omitempty"`
	// NestedType is set for attributes of nested attribute types, which
	// only plugin protocol 6 carries: Convert refuses them.
	NestedType      json.RawMessage `json:"nested_type,omitempty"`
	Description     string          `json:"description,omitempty"`
	DescriptionKind string          `json:"description_kind,omitempty"`
	Deprecated      bool            `json:"deprecated,omitempty"`
	Required        bool            `json:"required,omitempty"`
	Optional        bool            `json:"optional,omitempty"`
	Computed        bool            `json:"computed,omitempty"`
	Sensitive       bool            `json:"sensitive,omitempty"`
}

// BlockType is a nested block type of a block.
type BlockType struct {
	NestingMode string `json:"nesting_mode,omitempty"`
	Block       *Block `json:"block,omitempty"`
	MinItems    uint64 `json:"min_items,omitempty"`
	MaxItems    uint64 `json:"max_items,omitempty"`
}

// Function is a provider-defined function's signature.
type Function struct {
	Description       string           `json:"description"`
	Summary           string           `json:"summary"`
	ReturnType        json.RawMessage  `json:"return_type"`
	Parameters        []*FunctionParam `json:"parameters,omitempty"`
	VariadicParameter *FunctionParam   `json:"variadic_parameter,omitempty"`
}

// FunctionParam is one parameter of a Function.
type FunctionParam struct {
	Name        string          `json:"name"`
	Description string          `json:"description"`
	Type        json.RawMessage `json:"type"`
	IsNullable  *bool           `json:"is_nullable,omitempty"`
}

// Full is the whole output of `tofu providers schema -json`.
type Full struct {
	FormatVersion string               `json:"format_version"`
	Schemas       map[string]*Provider `json:"provider_schemas"`
}

// ParseFile reads a committed schema file and checks that every type in it
// converts to the plugin protocol.
func ParseFile(data []byte) (*File, error) {
	var f File
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("parse schema file: %w", err)
	}
	var problems []error
	if f.Provider == "" {
		problems = append(problems, errors.New("provider: missing"))
	}
	if f.Version == "" {
		problems = append(problems, errors.New("version: missing"))
	}
	if f.Schema.Provider == nil {
		problems = append(problems, errors.New("schema.provider: missing"))
	}
	if err := errors.Join(problems...); err != nil {
		return nil, fmt.Errorf("schema file of %q: %w", f.Provider, err)
	}
	if _, err := Convert(&f.Schema); err != nil {
		return nil, fmt.Errorf("schema file of %s %s: %w", f.Provider, f.Version, err)
	}
	return &f, nil
}

// Marshal encodes f as committed: indented, keys sorted, so that a schema
// change is a readable diff.
func (f *File) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(f, "", " ")
	if err != nil {
		return nil, fmt.Errorf("encode schema of %s: %w", f.Provider, err)
	}
	return append(b, '\n'), nil
}

// Prune returns the part of p that configurations using the given resource
// and data source types need: the provider's own configuration, those types
// found in p, and its functions. Descriptions are dropped: validation does
// not read them. Types p lacks are left out (another provider may have
// them); the caller checks that every type was found somewhere.
func Prune(p *Provider, used *Used) *Provider {
	out := &Provider{
		Provider:          stripSchema(p.Provider),
		ResourceSchemas:   map[string]*Schema{},
		DataSourceSchemas: map[string]*Schema{},
		Functions:         map[string]*Function{},
	}
	for t := range used.Resources {
		if s, ok := p.ResourceSchemas[t]; ok {
			out.ResourceSchemas[t] = stripSchema(s)
		}
	}
	for t := range used.DataSources {
		if s, ok := p.DataSourceSchemas[t]; ok {
			out.DataSourceSchemas[t] = stripSchema(s)
		}
	}
	for name, fn := range p.Functions {
		c := *fn
		c.Description = ""
		c.Parameters = nil
		for _, prm := range fn.Parameters {
			pc := *prm
			pc.Description = ""
			c.Parameters = append(c.Parameters, &pc)
		}
		if fn.VariadicParameter != nil {
			pc := *fn.VariadicParameter
			pc.Description = ""
			c.VariadicParameter = &pc
		}
		out.Functions[name] = &c
	}
	return out
}

func stripSchema(s *Schema) *Schema {
	if s == nil {
		return nil
	}
	return &Schema{Version: s.Version, Block: stripBlock(s.Block)}
}

func stripBlock(b *Block) *Block {
	if b == nil {
		return nil
	}
	out := &Block{Deprecated: b.Deprecated}
	if len(b.Attributes) > 0 {
		out.Attributes = make(map[string]*Attribute, len(b.Attributes))
		for name, a := range b.Attributes {
			c := *a
			c.Description, c.DescriptionKind = "", ""
			out.Attributes[name] = &c
		}
	}
	if len(b.BlockTypes) > 0 {
		out.BlockTypes = make(map[string]*BlockType, len(b.BlockTypes))
		for name, bt := range b.BlockTypes {
			c := *bt
			c.Block = stripBlock(bt.Block)
			out.BlockTypes[name] = &c
		}
	}
	return out
}

// Missing lists the used types that none of the providers has, each with
// where it is used, sorted.
func Missing(used *Used, providers ...*Provider) []string {
	var out []string
	for t, at := range used.Resources {
		if !slices.ContainsFunc(providers, func(p *Provider) bool { _, ok := p.ResourceSchemas[t]; return ok }) {
			out = append(out, fmt.Sprintf("resource type %s (%s)", t, strings.Join(at, ", ")))
		}
	}
	for t, at := range used.DataSources {
		if !slices.ContainsFunc(providers, func(p *Provider) bool { _, ok := p.DataSourceSchemas[t]; return ok }) {
			out = append(out, fmt.Sprintf("data source type %s (%s)", t, strings.Join(at, ", ")))
		}
	}
	slices.Sort(out)
	return out
}

// Unused lists the resource and data source types of the providers that no
// configuration uses, sorted: a committed schema that has them is stale.
func Unused(used *Used, providers ...*Provider) []string {
	var out []string
	for _, p := range providers {
		for _, t := range slices.Sorted(maps.Keys(p.ResourceSchemas)) {
			if _, ok := used.Resources[t]; !ok {
				out = append(out, "resource type "+t)
			}
		}
		for _, t := range slices.Sorted(maps.Keys(p.DataSourceSchemas)) {
			if _, ok := used.DataSources[t]; !ok {
				out = append(out, "data source type "+t)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
