package proto

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// consts returns the constants of proto.go declared with `byte` (the frame
// types) and those named Cap* (the capabilities), with their literal values.
func consts(t *testing.T) (types map[string]uint64, caps map[string]string) {
	f, err := parser.ParseFile(token.NewFileSet(), "proto.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	types, caps = map[string]uint64{}, map[string]string{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			v := s.(*ast.ValueSpec)
			lit, ok := v.Values[0].(*ast.BasicLit)
			if !ok {
				continue
			}
			name := v.Names[0].Name
			if id, ok := v.Type.(*ast.Ident); ok && id.Name == "byte" {
				n, err := strconv.ParseUint(lit.Value, 0, 8)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				types[name] = n
			} else if strings.HasPrefix(name, "Cap") {
				s, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				caps[name] = s
			}
		}
	}
	return types, caps
}

// upperSnake is how the Python generator names a Go identifier: HelloReply
// is HELLO_REPLY, CapTTY's TTY is TTY.
func upperSnake(s string) string {
	re := regexp.MustCompile(`([a-z0-9])([A-Z])|([A-Z])([A-Z][a-z])`)
	return strings.ToUpper(re.ReplaceAllString(s, "${1}${3}_${2}${4}"))
}

func TestEveryTypeHasItsNameOnce(t *testing.T) {
	types, _ := consts(t)
	if len(types) != len(Names) {
		t.Fatalf("%d frame types, %d names", len(types), len(Names))
	}
	seen := map[string]bool{}
	for ident, code := range types {
		name, ok := Names[byte(code)]
		if !ok || name != upperSnake(ident) {
			t.Errorf("type %s (0x%02x) is named %q, not %q", ident, code, name, upperSnake(ident))
		}
		if seen[name] {
			t.Errorf("two types are named %s", name)
		}
		seen[name] = true
	}
	for code := range Raw {
		if _, ok := Names[code]; !ok {
			t.Errorf("raw type 0x%02x has no name", code)
		}
	}
}

func TestCapabilitiesAreNamedAsTheySpell(t *testing.T) {
	_, caps := consts(t)
	seen := map[string]bool{}
	for ident, value := range caps {
		if upperSnake(strings.TrimPrefix(ident, "Cap")) != strings.ToUpper(value) ||
			value != strings.ToLower(value) || seen[value] {
			t.Errorf("capability %s = %q: a lowercase word spelled as the name, once", ident, value)
		}
		seen[value] = true
	}
	if len(caps) < 14 {
		t.Errorf("only %d capabilities found", len(caps))
	}
}

func TestLimitsFitTheHeader(t *testing.T) {
	if HeaderSize != 4+1+4 {
		t.Errorf("header of %d bytes, not length+type+stream", HeaderSize)
	}
	if MaxPayload+5 > math.MaxUint32 || ChunkSize > MaxPayload {
		t.Errorf("limits do not fit: payload %d, chunk %d", MaxPayload, ChunkSize)
	}
}

// The golden frames are the wire's contract: every type is in them, under its
// name, with a payload of its kind.
func TestTheGoldenFramesShowEveryType(t *testing.T) {
	raw, err := os.ReadFile("../docs/protocol-golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var golden struct {
		Version int `json:"version"`
		Frames  []struct {
			Name     string           `json:"name"`
			Type     byte             `json:"type"`
			TypeName string           `json:"type_name"`
			JSON     *json.RawMessage `json:"json"`
		} `json:"frames"`
	}
	if err := json.Unmarshal(raw, &golden); err != nil {
		t.Fatal(err)
	}
	if golden.Version != Version {
		t.Fatalf("golden frames of version %d", golden.Version)
	}
	seen := map[byte]bool{}
	for _, g := range golden.Frames {
		if Names[g.Type] != g.TypeName || Raw[g.Type] != (g.JSON == nil) {
			t.Errorf("%s: 0x%02x %s (raw %v) here is %q (raw %v)", g.Name, g.Type, g.TypeName,
				g.JSON == nil, Names[g.Type], Raw[g.Type])
		}
		seen[g.Type] = true
	}
	for code, name := range Names {
		if !seen[code] {
			t.Errorf("no golden frame shows %s", name)
		}
	}
}
