package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"microbox/proto"
	"os"
	"reflect"
	"testing"
)

type goldenFile struct {
	Version int `json:"version"`
	Frames  []struct {
		Name   string          `json:"name"`
		Hex    string          `json:"hex"`
		Type   byte            `json:"type"`
		TName  string          `json:"type_name"`
		Stream uint32          `json:"stream"`
		JSON   json.RawMessage `json:"json"`
		RawHex *string         `json:"raw_hex"`
	} `json:"frames"`
}

func decodeUseNumber(t *testing.T, b []byte) interface{} {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v interface{}
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("bad JSON %q: %v", b, err)
	}
	return v
}

// loadGolden reads docs/protocol-golden.json, shared with the Python tests.
func loadGolden(t *testing.T) goldenFile {
	t.Helper()
	raw, err := os.ReadFile("../../docs/protocol-golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var g goldenFile
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatal(err)
	}
	return g
}

func TestGoldenFrames(t *testing.T) {
	g := loadGolden(t)
	if g.Version != protocolVersion || len(g.Frames) == 0 {
		t.Fatalf("golden version %d with %d frames", g.Version, len(g.Frames))
	}
	byName := map[string][]byte{}
	for _, gf := range g.Frames {
		wire, err := hex.DecodeString(gf.Hex)
		if err != nil {
			t.Fatalf("%s: %v", gf.Name, err)
		}
		// Whole, then one byte at a time: same single frame.
		for _, split := range []int{len(wire), 1} {
			var d Decoder
			var frames []Frame
			for i := 0; i < len(wire); i += split {
				end := i + split
				if end > len(wire) {
					end = len(wire)
				}
				fs, err := d.Feed(wire[i:end])
				if err != nil {
					t.Fatalf("%s: decode: %v", gf.Name, err)
				}
				frames = append(frames, fs...)
			}
			if len(frames) != 1 || d.Pending() != 0 {
				t.Fatalf("%s: got %d frames, %d pending", gf.Name, len(frames), d.Pending())
			}
			f := frames[0]
			if f.Type != gf.Type || typeName(f.Type) != gf.TName || f.Stream != gf.Stream {
				t.Fatalf("%s: got type %s stream %d", gf.Name, typeName(f.Type), f.Stream)
			}
			if gf.RawHex != nil {
				want, _ := hex.DecodeString(*gf.RawHex)
				if !rawTypes[f.Type] || !bytes.Equal(f.Payload, want) {
					t.Fatalf("%s: raw payload %x, want %x", gf.Name, f.Payload, want)
				}
			} else {
				if rawTypes[f.Type] || checkObject(f.Type, f.Payload) != nil {
					t.Fatalf("%s: payload is not a JSON object", gf.Name)
				}
				if !reflect.DeepEqual(decodeUseNumber(t, f.Payload), decodeUseNumber(t, gf.JSON)) {
					t.Fatalf("%s: JSON %s, want %s", gf.Name, f.Payload, gf.JSON)
				}
			}
			if got := encodeFrame(f.Type, f.Stream, f.Payload); !bytes.Equal(got, wire) {
				t.Fatalf("%s: re-encoded %x, want %x", gf.Name, got, wire)
			}
			byName[gf.Name] = f.Payload
		}
	}

	// What the agent itself produces must match the golden bytes exactly.
	seven, fifteen := 7, 15
	_, nosuch := lookPath("nosuch", "/nonexistent-dir", "/")
	own := map[string][]byte{
		"hello_reply": marshalJSON(helloReply{Version: 1, Session: "s1", Agent: agentName, Capabilities: capabilities}),
		"started":     marshalJSON(startedMsg{Pid: 42}),
		"exit_code":   marshalJSON(exitMsg{Code: &seven}),
		"exit_signal": marshalJSON(exitMsg{Signal: &fifteen}),
		"file":        marshalJSON(fileMsg{Mode: 420, Size: 13}),
		"done":        doneJSON,
		"connected":   doneJSON,
		"window":      windowPayload(65536),
		"error":       marshalJSON(errorMsg{Kind: nosuch.kind, Message: nosuch.msg}),
		"pong":        byName["ping"],
	}
	for name, got := range own {
		want, ok := byName[name]
		if !ok {
			t.Fatalf("golden file has no frame %q", name)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: agent encodes %s, golden is %s", name, got, want)
		}
	}
}

func TestDecoderRejects(t *testing.T) {
	cases := map[string][]byte{
		"short length":   {0, 0, 0, 4, proto.Ping, 0, 0, 0, 0},
		"zero length":    {0, 0, 0, 0, proto.Ping, 0, 0, 0, 0},
		"oversize":       {0, 0x10, 0, 6, proto.Data, 0, 0, 0, 1},
		"unknown type":   {0, 0, 0, 5, 0x06, 0, 0, 0, 0},
		"unknown 0x7e":   {0, 0, 0, 5, 0x7e, 0, 0, 0, 0},
		"second is evil": append(encodeFrame(proto.Ping, 0, []byte("x")), 0xff, 0xff, 0xff, 0xff, proto.Data, 0, 0, 0, 0),
	}
	for name, b := range cases {
		var d Decoder
		_, err := d.Feed(b)
		pe, ok := err.(*protoError)
		if !ok || pe.kind != "protocol" {
			t.Errorf("%s: got %v, want a protocol error", name, err)
		}
	}
	// The largest legal frame is accepted; a header alone is just pending.
	var d Decoder
	big := encodeFrame(proto.Data, 3, make([]byte, maxPayload))
	fs, err := d.Feed(big[:headerSize])
	if err != nil || len(fs) != 0 || d.Pending() != headerSize {
		t.Fatalf("header only: %v %d %d", err, len(fs), d.Pending())
	}
	fs, err = d.Feed(big[headerSize:])
	if err != nil || len(fs) != 1 || len(fs[0].Payload) != maxPayload || d.Pending() != 0 {
		t.Fatalf("max frame: %v %d", err, len(fs))
	}
	// Several frames in one chunk, the last one partial.
	var two []byte
	two = append(two, encodeFrame(proto.Stdin, 1, []byte("a"))...)
	two = append(two, encodeFrame(proto.Stdin, 1, nil)...)
	two = append(two, encodeFrame(proto.Stdin, 2, []byte("bc"))[:10]...)
	fs, err = d.Feed(two)
	if err != nil || len(fs) != 2 || string(fs[0].Payload) != "a" || len(fs[1].Payload) != 0 || d.Pending() != 10 {
		t.Fatalf("multi: %v %d %d", err, len(fs), d.Pending())
	}
}

func TestCheckObject(t *testing.T) {
	for _, bad := range []string{"", "[]", "1", "{", `{"a":1}x`, "null"} {
		if checkObject(proto.Exec, []byte(bad)) == nil {
			t.Errorf("%q accepted as a JSON object", bad)
		}
	}
	if checkObject(proto.Exec, []byte(` {"argv":["x"]} `)) != nil {
		t.Error("valid object rejected")
	}
}

// goldenByName: each golden frame's wire bytes by its name.
func goldenByName(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, gf := range loadGolden(t).Frames {
		wire, err := hex.DecodeString(gf.Hex)
		if err != nil {
			t.Fatalf("%s: %v", gf.Name, err)
		}
		out[gf.Name] = wire
	}
	return out
}
