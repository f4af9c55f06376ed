// Package proto is the one definition of protocol v1's constants
// (docs/protocol.md): the limits, the frame types and their names, which types
// carry raw bytes, and the capability names. The agent (guest/agent) and the
// shim (host/shim) import it; scripts/gen_protocol.py reads this file and
// writes the host's copy, src/microbox/agent/wire_gen.py.
//
// The generator reads this file line by line and refuses any line it does not
// know, so it holds nothing but these blocks, each entry on a line of its own
// in the form gofmt gives it. Add a frame type in three places here (its code,
// its name, and Raw if its payload is raw bytes), then run
// `python3 scripts/gen_protocol.py` and add a golden frame.
package proto

// Limits. A frame is u32 length (5 + payload size), u8 type, u32 stream,
// payload; all integers big-endian.
const (
	Version    = 1         // the one version both sides speak
	HeaderSize = 9         // length, type, stream
	MaxPayload = 1 << 20   // the largest payload a reader takes
	ChunkSize  = 64 * 1024 // the largest data payload a writer sends (but exec output)
)

// Frame types: the byte on the wire.
const (
	Hello      byte = 0x01
	HelloReply byte = 0x02
	Ping       byte = 0x03
	Pong       byte = 0x04
	Window     byte = 0x05
	Exec       byte = 0x10
	Started    byte = 0x11
	Stdin      byte = 0x12
	Stdout     byte = 0x13
	Stderr     byte = 0x14
	Exit       byte = 0x15
	Signal     byte = 0x16
	Resize     byte = 0x17
	Cancel     byte = 0x18
	Put        byte = 0x20
	Data       byte = 0x21
	Get        byte = 0x22
	File       byte = 0x23
	Done       byte = 0x24
	TarGet     byte = 0x25
	TarPut     byte = 0x26
	Shutdown   byte = 0x30
	Connect    byte = 0x40
	Connected  byte = 0x41
	Error      byte = 0x7f
)

// Names of the frame types, as docs/protocol.md and errors spell them. A type
// that is not here is unknown: a reader refuses it.
var Names = map[byte]string{
	Hello:      "HELLO",
	HelloReply: "HELLO_REPLY",
	Ping:       "PING",
	Pong:       "PONG",
	Window:     "WINDOW",
	Exec:       "EXEC",
	Started:    "STARTED",
	Stdin:      "STDIN",
	Stdout:     "STDOUT",
	Stderr:     "STDERR",
	Exit:       "EXIT",
	Signal:     "SIGNAL",
	Resize:     "RESIZE",
	Cancel:     "CANCEL",
	Put:        "PUT",
	Data:       "DATA",
	Get:        "GET",
	File:       "FILE",
	Done:       "DONE",
	TarGet:     "TAR_GET",
	TarPut:     "TAR_PUT",
	Shutdown:   "SHUTDOWN",
	Connect:    "CONNECT",
	Connected:  "CONNECTED",
	Error:      "ERROR",
}

// Raw are the types whose payload is raw bytes; every other type carries one
// JSON object.
var Raw = map[byte]bool{
	Ping:   true,
	Pong:   true,
	Window: true,
	Stdin:  true,
	Stdout: true,
	Stderr: true,
	Data:   true,
}

// Capabilities: what a HELLO_REPLY may list (docs/protocol.md, "HELLO /
// HELLO_REPLY"). The host relies on nothing an agent does not list.
const (
	CapExec      = "exec"
	CapTTY       = "tty"
	CapSignal    = "signal"
	CapFiles     = "files"
	CapPing      = "ping"
	CapShutdown  = "shutdown"
	CapIdentity  = "identity"
	CapCancel    = "cancel"
	CapConnect   = "connect"
	CapTar       = "tar"
	CapWindow    = "window"
	CapNet       = "net"
	CapDNS       = "dns"
	CapTarExport = "tar_export" // TAR_GET takes "hardlinks" and "xattrs"
	CapMounts    = "mounts"     // HELLO's identity field "mounts" (host folders, volumes)
	CapMux       = "mux"        // listed by the shim on mux.sock, never by an agent
)
