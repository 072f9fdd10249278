package api

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// DecodeFile reads the YAML (or JSON) file at path into v, strictly: an
// unknown field, a value of the wrong type, an empty file or a second
// document is an error. Then, if v has them, it calls v's Defaults() and
// Validate() methods. Every problem comes back at once as SpecErrors, each
// with the file, its line and, for a bad value, the field.
//
// It is the one way rackflow's programs read their YAML: the inventory, the
// secrets file, deploy specs and workflow inputs, the pxe service's config.
func DecodeFile(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return Decode(path, data, v)
}

// Decode is DecodeFile for data already read; name stands for the file in
// errors.
func Decode(name string, data []byte, v any) error {
	if err := precheck(data, v); err != nil {
		var se SpecErrors
		if errors.As(err, &se) {
			for i := range se {
				se[i].File = name
			}
			return se
		}
		return yamlErrors(name, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return SpecErrors{{File: name, Msg: "holds no YAML document"}}
		}
		return yamlErrors(name, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return SpecErrors{{File: name, Line: extra.Line, Msg: "a second YAML document; a file holds one"}}
	} else if !errors.Is(err, io.EOF) {
		return yamlErrors(name, err)
	}
	if d, ok := v.(interface{ Defaults() }); ok {
		d.Defaults()
	}
	val, ok := v.(interface{ Validate() error })
	if !ok {
		return nil
	}
	err := val.Validate()
	if err == nil {
		return nil
	}
	var fe FieldErrors
	if !errors.As(err, &fe) {
		return SpecErrors{{File: name, Msg: err.Error()}}
	}
	var root yaml.Node
	_ = yaml.Unmarshal(data, &root)
	out := make(SpecErrors, len(fe))
	for i, e := range fe {
		out[i] = SpecError{File: name, Line: lineOf(&root, e.Field), Field: e.Field, Msg: e.Reason + quoted(e.Value)}
	}
	return out
}

// SpecError is one problem of an input file, with where it is. Field is
// empty for a file that does not parse.
type SpecError struct {
	File  string
	Line  int
	Field string
	Msg   string
}

func (e SpecError) Error() string {
	at := e.File
	if e.Line > 0 {
		at += ":" + strconv.Itoa(e.Line)
	}
	if e.Field == "" {
		return fmt.Sprintf("%s: %s", at, e.Msg)
	}
	return fmt.Sprintf("%s: %s: %s", at, e.Field, e.Msg)
}

// SpecErrors lists every problem of an input file.
type SpecErrors []SpecError

func (es SpecErrors) Error() string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// yamlErrors turns a yaml.v3 error into SpecErrors: one per problem of a
// type error ("line 3: field vipp not found in type api.PublishInput"), or
// the one syntax error ("yaml: line 3: mapping values are not allowed").
func yamlErrors(name string, err error) SpecErrors {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		out := make(SpecErrors, len(te.Errors))
		for i, msg := range te.Errors {
			line, rest := splitLine(msg)
			out[i] = SpecError{File: name, Line: line, Msg: rest}
		}
		return out
	}
	line, rest := splitLine(strings.TrimPrefix(err.Error(), "yaml: "))
	return SpecErrors{{File: name, Line: line, Msg: rest}}
}

// splitLine splits "line 3: msg" into 3 and "msg"; a message without a
// line comes back whole, with line 0.
func splitLine(msg string) (int, string) {
	rest, ok := strings.CutPrefix(msg, "line ")
	if !ok {
		return 0, msg
	}
	num, after, ok := strings.Cut(rest, ": ")
	n, err := strconv.Atoi(num)
	if !ok || err != nil {
		return 0, msg
	}
	return n, after
}

func quoted(v string) string {
	if v == "" {
		return ""
	}
	return " (got " + quoteShort(v) + ")"
}

// lineOf finds the line of a field path like "vms[0].guest.host_key" in the
// YAML tree; it falls back to the deepest node found.
func lineOf(root *yaml.Node, path string) int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, part := range strings.Split(path, ".") {
		name, idx := part, -1
		if i := strings.Index(part, "["); i >= 0 && strings.HasSuffix(part, "]") {
			name = part[:i]
			fmt.Sscanf(part[i+1:len(part)-1], "%d", &idx)
		}
		next := mapValue(n, name)
		if next == nil {
			return line
		}
		n, line = next, next.Line
		if idx >= 0 {
			if n.Kind != yaml.SequenceNode || idx >= len(n.Content) {
				return line
			}
			n, line = n.Content[idx], n.Content[idx].Line
		}
	}
	return line
}

// mapValue is the value of key in a mapping node (inline structs, such as
// the VMNetInput in vms[i], live in the same mapping), or nil.
func mapValue(n *yaml.Node, key string) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}
