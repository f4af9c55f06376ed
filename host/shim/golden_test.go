package main

// The shim's names for the frame types (taken from proto, proto/proto.go)
// against the golden frames of docs/protocol-golden.json, which the agent's,
// proto's and the host's tests decode too.

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"microbox/proto"
	"os"
	"testing"
)

var shimTypes = map[string]byte{
	"HELLO": proto.Hello, "HELLO_REPLY": proto.HelloReply, "PING": proto.Ping, "PONG": proto.Pong,
	"WINDOW": proto.Window, "EXEC": proto.Exec, "STARTED": proto.Started, "STDIN": proto.Stdin,
	"STDOUT": proto.Stdout, "STDERR": proto.Stderr, "EXIT": proto.Exit, "SIGNAL": proto.Signal,
	"RESIZE": proto.Resize, "CANCEL": proto.Cancel, "PUT": proto.Put, "DATA": proto.Data, "GET": proto.Get,
	"FILE": proto.File, "DONE": proto.Done, "TAR_GET": proto.TarGet, "TAR_PUT": proto.TarPut,
	"SHUTDOWN": proto.Shutdown, "CONNECT": proto.Connect, "CONNECTED": proto.Connected, "ERROR": proto.Error,
}

func TestFrameTypesMatchTheGoldenFrames(t *testing.T) {
	raw, err := os.ReadFile("../../docs/protocol-golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var golden struct {
		Frames []struct {
			Name     string `json:"name"`
			Hex      string `json:"hex"`
			Type     int    `json:"type"`
			TypeName string `json:"type_name"`
			Stream   uint32 `json:"stream"`
		} `json:"frames"`
	}
	if err := json.Unmarshal(raw, &golden); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	all := union(fromClient, fromGuest, map[byte]bool{proto.Window: true})
	for _, g := range golden.Frames {
		code, ok := shimTypes[g.TypeName]
		if !ok || int(code) != g.Type {
			t.Fatalf("%s: the shim has %s as 0x%02x (known %v), the spec 0x%02x", g.Name,
				g.TypeName, code, ok, g.Type)
		}
		seen[g.TypeName] = true
		b, err := hex.DecodeString(g.Hex)
		if err != nil {
			t.Fatal(err)
		}
		f, err := readFrame(bytes.NewReader(b), make([]byte, headerSize), all)
		if err != nil || int(f.Type) != g.Type || f.Stream != g.Stream {
			t.Fatalf("%s: decoded %+v, %v", g.Name, f, err)
		}
	}
	for name := range shimTypes {
		if !seen[name] {
			t.Errorf("the shim knows %s, which no golden frame shows", name)
		}
	}
}
