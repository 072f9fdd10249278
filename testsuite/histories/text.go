// Package histories reads runs back for tests (the saved histories replayed in
// CI live in workflows/testdata) and holds
// a helper that renders a history as searchable text, with every payload
// decoded, so a test can prove no secret reached it. Payload data is base64 in
// a history's JSON form: searching that JSON alone would miss a leak.
package histories

import (
	"strings"

	commonpb "go.temporal.io/api/common/v1"
	historypb "go.temporal.io/api/history/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Text returns the history as JSON followed by the raw bytes of every
// payload in it (inputs, results, heartbeat details, failure details,
// memos, search attributes, Update arguments).
func Text(h *historypb.History) (string, error) {
	raw, err := protojson.Marshal(h)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.Write(raw)
	n := 0
	walk(h.ProtoReflect(), func(p *commonpb.Payload) {
		b.WriteString("\n--- payload ---\n")
		b.Write(p.GetData())
		n++
	})
	return b.String(), nil
}

// PayloadCount counts the payloads Text decodes, so a test can check it
// looked at something.
func PayloadCount(h *historypb.History) int {
	n := 0
	walk(h.ProtoReflect(), func(*commonpb.Payload) { n++ })
	return n
}

func walk(m protoreflect.Message, fn func(*commonpb.Payload)) {
	if p, ok := m.Interface().(*commonpb.Payload); ok {
		fn(p)
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				walk(l.Get(i).Message(), fn)
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				walk(mv.Message(), fn)
				return true
			})
		case fd.Message() != nil && !fd.IsList() && !fd.IsMap():
			walk(v.Message(), fn)
		}
		return true
	})
}

var _ proto.Message = (*historypb.History)(nil)
