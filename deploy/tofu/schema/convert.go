package schema

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/hashicorp/terraform-plugin-go/tfprotov5"
	"github.com/hashicorp/terraform-plugin-go/tftypes"
)

// Protocol is a provider's schema in the types of plugin protocol 5.
type Protocol struct {
	Provider          *tfprotov5.Schema
	ResourceSchemas   map[string]*tfprotov5.Schema
	DataSourceSchemas map[string]*tfprotov5.Schema
	Functions         map[string]*tfprotov5.Function
}

// Convert turns a provider's JSON schema into protocol 5 schemas. An error
// names the type and the attribute path that cannot be converted.
func Convert(p *Provider) (*Protocol, error) {
	out := &Protocol{
		ResourceSchemas:   map[string]*tfprotov5.Schema{},
		DataSourceSchemas: map[string]*tfprotov5.Schema{},
		Functions:         map[string]*tfprotov5.Function{},
	}
	var err error
	if out.Provider, err = convertSchema(p.Provider, "provider"); err != nil {
		return nil, err
	}
	for _, name := range slices.Sorted(maps.Keys(p.ResourceSchemas)) {
		if out.ResourceSchemas[name], err = convertSchema(p.ResourceSchemas[name], "resource "+name); err != nil {
			return nil, err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(p.DataSourceSchemas)) {
		if out.DataSourceSchemas[name], err = convertSchema(p.DataSourceSchemas[name], "data source "+name); err != nil {
			return nil, err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(p.Functions)) {
		if out.Functions[name], err = convertFunction(p.Functions[name], "function "+name); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func convertSchema(s *Schema, where string) (*tfprotov5.Schema, error) {
	if s == nil || s.Block == nil {
		return nil, fmt.Errorf("%s: no block", where)
	}
	b, err := convertBlock(s.Block, where)
	if err != nil {
		return nil, err
	}
	return &tfprotov5.Schema{Version: int64(s.Version), Block: b}, nil
}

var nesting = map[string]tfprotov5.SchemaNestedBlockNestingMode{
	"single": tfprotov5.SchemaNestedBlockNestingModeSingle,
	"list":   tfprotov5.SchemaNestedBlockNestingModeList,
	"set":    tfprotov5.SchemaNestedBlockNestingModeSet,
	"map":    tfprotov5.SchemaNestedBlockNestingModeMap,
	"group":  tfprotov5.SchemaNestedBlockNestingModeGroup,
}

func convertBlock(b *Block, where string) (*tfprotov5.SchemaBlock, error) {
	out := &tfprotov5.SchemaBlock{Deprecated: b.Deprecated}
	for _, name := range slices.Sorted(maps.Keys(b.Attributes)) {
		a := b.Attributes[name]
		at := where + "." + name
		if len(a.NestedType) > 0 {
			return nil, fmt.Errorf("%s: a nested attribute type, which plugin protocol 5 cannot carry", at)
		}
		t, err := ParseType(a.Type)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", at, err)
		}
		out.Attributes = append(out.Attributes, &tfprotov5.SchemaAttribute{
			Name: name, Type: t,
			Required: a.Required, Optional: a.Optional, Computed: a.Computed,
			Sensitive: a.Sensitive, Deprecated: a.Deprecated,
		})
	}
	for _, name := range slices.Sorted(maps.Keys(b.BlockTypes)) {
		bt := b.BlockTypes[name]
		at := where + "." + name
		mode, ok := nesting[bt.NestingMode]
		if !ok {
			return nil, fmt.Errorf("%s: unknown nesting_mode %q", at, bt.NestingMode)
		}
		if bt.Block == nil {
			return nil, fmt.Errorf("%s: no block", at)
		}
		inner, err := convertBlock(bt.Block, at)
		if err != nil {
			return nil, err
		}
		out.BlockTypes = append(out.BlockTypes, &tfprotov5.SchemaNestedBlock{
			TypeName: name, Block: inner, Nesting: mode,
			MinItems: int64(bt.MinItems), MaxItems: int64(bt.MaxItems),
		})
	}
	return out, nil
}

func convertFunction(f *Function, where string) (*tfprotov5.Function, error) {
	ret, err := ParseType(f.ReturnType)
	if err != nil {
		return nil, fmt.Errorf("%s: return type: %w", where, err)
	}
	out := &tfprotov5.Function{Summary: f.Summary, Return: &tfprotov5.FunctionReturn{Type: ret}}
	param := func(p *FunctionParam) (*tfprotov5.FunctionParameter, error) {
		t, err := ParseType(p.Type)
		if err != nil {
			return nil, fmt.Errorf("%s: parameter %s: %w", where, p.Name, err)
		}
		return &tfprotov5.FunctionParameter{Name: p.Name, Type: t, AllowNullValue: p.IsNullable != nil && *p.IsNullable}, nil
	}
	for _, p := range f.Parameters {
		fp, err := param(p)
		if err != nil {
			return nil, err
		}
		out.Parameters = append(out.Parameters, fp)
	}
	if f.VariadicParameter != nil {
		if out.VariadicParameter, err = param(f.VariadicParameter); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ParseType reads a cty type in its JSON form ("string", ["list","number"],
// ["object",{"a":"bool"},["a"]], ["tuple",["string"]], "dynamic").
func ParseType(raw json.RawMessage) (tftypes.Type, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return nil, fmt.Errorf("no type")
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("type %s: %w", raw, err)
		}
		switch s {
		case "string":
			return tftypes.String, nil
		case "number":
			return tftypes.Number, nil
		case "bool":
			return tftypes.Bool, nil
		case "dynamic":
			return tftypes.DynamicPseudoType, nil
		}
		return nil, fmt.Errorf("unknown primitive type %q", s)
	}
	var parts []json.RawMessage
	if err := json.Unmarshal(raw, &parts); err != nil || len(parts) < 2 {
		return nil, fmt.Errorf("type %s: not a type name nor [kind, ...]", raw)
	}
	var kind string
	if err := json.Unmarshal(parts[0], &kind); err != nil {
		return nil, fmt.Errorf("type %s: kind is not a string", raw)
	}
	switch kind {
	case "list", "set", "map":
		if len(parts) != 2 {
			return nil, fmt.Errorf("type %s: %s takes one element type", raw, kind)
		}
		elem, err := ParseType(parts[1])
		if err != nil {
			return nil, err
		}
		switch kind {
		case "list":
			return tftypes.List{ElementType: elem}, nil
		case "set":
			return tftypes.Set{ElementType: elem}, nil
		}
		return tftypes.Map{ElementType: elem}, nil
	case "object":
		if len(parts) > 3 {
			return nil, fmt.Errorf("type %s: object takes attributes and optional names", raw)
		}
		var attrs map[string]json.RawMessage
		if err := json.Unmarshal(parts[1], &attrs); err != nil {
			return nil, fmt.Errorf("type %s: object attributes: %w", raw, err)
		}
		obj := tftypes.Object{AttributeTypes: make(map[string]tftypes.Type, len(attrs))}
		for name, at := range attrs {
			t, err := ParseType(at)
			if err != nil {
				return nil, fmt.Errorf("object attribute %s: %w", name, err)
			}
			obj.AttributeTypes[name] = t
		}
		if len(parts) == 3 {
			var optional []string
			if err := json.Unmarshal(parts[2], &optional); err != nil {
				return nil, fmt.Errorf("type %s: optional attribute names: %w", raw, err)
			}
			obj.OptionalAttributes = map[string]struct{}{}
			for _, name := range optional {
				if _, ok := attrs[name]; !ok {
					return nil, fmt.Errorf("type %s: optional attribute %q is not an attribute", raw, name)
				}
				obj.OptionalAttributes[name] = struct{}{}
			}
		}
		return obj, nil
	case "tuple":
		if len(parts) != 2 {
			return nil, fmt.Errorf("type %s: tuple takes a list of element types", raw)
		}
		var elems []json.RawMessage
		if err := json.Unmarshal(parts[1], &elems); err != nil {
			return nil, fmt.Errorf("type %s: tuple elements: %w", raw, err)
		}
		tup := tftypes.Tuple{ElementTypes: []tftypes.Type{}}
		for i, e := range elems {
			t, err := ParseType(e)
			if err != nil {
				return nil, fmt.Errorf("tuple element %d: %w", i, err)
			}
			tup.ElementTypes = append(tup.ElementTypes, t)
		}
		return tup, nil
	}
	return nil, fmt.Errorf("type %s: unknown kind %q", raw, kind)
}
