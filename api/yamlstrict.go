package api

import (
	"fmt"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"
)

// precheck refuses what yaml.v3 lets through quietly before Decode runs:
// a null document (an inventory of nothing), and a fractional or exponent
// number in an integer field (yaml.v3 truncates "size: 2.5" to 2). A
// document that does not parse is left to Decode's own error.
func precheck(data []byte, v any) error {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil
	}
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	if doc.Kind == yaml.ScalarNode && doc.Tag == "!!null" {
		return SpecErrors{{Line: doc.Line, Msg: "the document is null: it holds nothing"}}
	}
	return checkInts(doc, reflect.TypeOf(v), "")
}

// checkInts walks n beside the Go type t and refuses a non-integer scalar
// where t wants an integer.
func checkInts(n *yaml.Node, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if n.Kind == yaml.ScalarNode && n.Tag == "!!float" && t.PkgPath() == "" {
			return SpecErrors{{Line: n.Line, Field: path, Msg: "must be a whole number (got " + quoteShort(n.Value) + ")"}}
		}
	case reflect.Slice, reflect.Array:
		if n.Kind == yaml.SequenceNode {
			for i, c := range n.Content {
				if err := checkInts(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
					return err
				}
			}
		}
	case reflect.Map:
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if err := checkInts(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value)); err != nil {
					return err
				}
			}
		}
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return nil
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			if f, ok := yamlField(t, key); ok {
				if err := checkInts(n.Content[i+1], f.Type, join(path, key)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// yamlField finds the field of struct t that yaml.v3 decodes key into,
// looking into inlined structs.
func yamlField(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if strings.Contains(opts, "inline") {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				if sf, ok := yamlField(ft, key); ok {
					return sf, true
				}
			}
			continue
		}
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		if name == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// quoteShort quotes s for an error message, cut to 64 bytes: a message must
// not echo megabytes of someone's input back into logs and history.
func quoteShort(s string) string {
	const max = 64
	if len(s) <= max {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q… (%d bytes)", s[:max], len(s))
}
