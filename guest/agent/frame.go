package main

// Frame codec of protocol v1 (docs/protocol.md).
//
// A frame is: u32 length (5 + payload size), u8 type, u32 stream, payload.
// All integers are big-endian. The decoder never buffers more than one maximal
// frame and rejects a bad length or an unknown type as soon as the 9-byte
// header is available.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
)

const (
	protocolVersion = 1
	headerSize      = 9
	maxPayload      = 1 << 20
	chunkSize       = 64 * 1024
	maxPing         = 64
)

// Frame types.
const (
	tHello      byte = 0x01
	tHelloReply byte = 0x02
	tPing       byte = 0x03
	tPong       byte = 0x04
	tWindow     byte = 0x05
	tExec       byte = 0x10
	tStarted    byte = 0x11
	tStdin      byte = 0x12
	tStdout     byte = 0x13
	tStderr     byte = 0x14
	tExit       byte = 0x15
	tSignal     byte = 0x16
	tResize     byte = 0x17
	tCancel     byte = 0x18
	tPut        byte = 0x20
	tData       byte = 0x21
	tGet        byte = 0x22
	tFile       byte = 0x23
	tDone       byte = 0x24
	tTarGet     byte = 0x25
	tTarPut     byte = 0x26
	tShutdown   byte = 0x30
	tConnect    byte = 0x40
	tConnected  byte = 0x41
	tError      byte = 0x7f
)

var typeNames = map[byte]string{
	tHello: "HELLO", tHelloReply: "HELLO_REPLY", tPing: "PING", tPong: "PONG", tWindow: "WINDOW",
	tExec: "EXEC", tStarted: "STARTED", tStdin: "STDIN", tStdout: "STDOUT",
	tStderr: "STDERR", tExit: "EXIT", tSignal: "SIGNAL", tResize: "RESIZE", tCancel: "CANCEL",
	tPut: "PUT", tData: "DATA", tGet: "GET", tFile: "FILE", tDone: "DONE",
	tTarGet: "TAR_GET", tTarPut: "TAR_PUT", tShutdown: "SHUTDOWN", tConnect: "CONNECT",
	tConnected: "CONNECTED", tError: "ERROR",
}

// rawTypes carry raw bytes; every other type carries one JSON object.
var rawTypes = map[byte]bool{
	tPing: true, tPong: true, tWindow: true, tStdin: true, tStdout: true, tStderr: true, tData: true,
}

func typeName(t byte) string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("0x%02x", t)
}

// Frame is one decoded frame. Payload is owned by the frame.
type Frame struct {
	Type    byte
	Stream  uint32
	Payload []byte
}

// protoError is a session-level failure reported as ERROR on stream 0.
type protoError struct {
	kind string // "protocol" or "version"
	msg  string
}

func (e *protoError) Error() string { return e.kind + ": " + e.msg }

func errProtocol(format string, args ...interface{}) *protoError {
	return &protoError{kind: "protocol", msg: fmt.Sprintf(format, args...)}
}

// putHeader writes the 9-byte header for a payload of n bytes into b.
func putHeader(b []byte, t byte, stream uint32, n int) {
	binary.BigEndian.PutUint32(b[0:4], uint32(n+5))
	b[4] = t
	binary.BigEndian.PutUint32(b[5:9], stream)
}

// encodeFrame serializes one frame.
func encodeFrame(t byte, stream uint32, payload []byte) []byte {
	b := make([]byte, headerSize+len(payload))
	putHeader(b, t, stream, len(payload))
	copy(b[headerSize:], payload)
	return b
}

// Decoder turns a byte stream into frames. The zero value is ready to use.
type Decoder struct {
	buf []byte
}

// Feed appends data and returns every whole frame now available. After an
// error the decoder holds the bytes from the bad header on (see Salvage) and
// must not be fed again: the stream has lost its frame boundaries.
func (d *Decoder) Feed(data []byte) ([]Frame, error) {
	d.buf = append(d.buf, data...)
	var frames []Frame
	var err error
	off := 0
	for len(d.buf)-off >= headerSize {
		h := d.buf[off:]
		length := binary.BigEndian.Uint32(h[0:4])
		t := h[4]
		if length < 5 || length > maxPayload+5 {
			err = errProtocol("frame length %d outside 5..%d", length, maxPayload+5)
			break
		}
		if _, ok := typeNames[t]; !ok {
			err = errProtocol("unknown frame type 0x%02x", t)
			break
		}
		end := 4 + int(length)
		if len(h) < end {
			break
		}
		payload := make([]byte, end-headerSize)
		copy(payload, h[headerSize:end])
		frames = append(frames, Frame{Type: t, Stream: binary.BigEndian.Uint32(h[5:9]), Payload: payload})
		off += end
	}
	d.trim(off)
	return frames, err
}

// Salvage returns what followed the start of the bad or torn frame at the
// head of the buffer: the bytes in which a resynchronising hunt begins.
func (d *Decoder) Salvage() []byte {
	if len(d.buf) == 0 {
		return nil
	}
	return append([]byte(nil), d.buf[1:]...)
}

func (d *Decoder) trim(off int) {
	if off > 0 {
		n := copy(d.buf, d.buf[off:])
		d.buf = d.buf[:n]
		if cap(d.buf) > 2*chunkSize && n < chunkSize {
			// Do not keep a 1 MiB buffer around after a big frame.
			d.buf = append([]byte(nil), d.buf...)
		}
	}
}

// Pending returns the number of bytes buffered towards the next frame.
func (d *Decoder) Pending() int { return len(d.buf) }

// marshalJSON encodes v compactly without HTML escaping.
func marshalJSON(v interface{}) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(err) // only fixed agent types are marshalled
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// checkObject reports whether payload is one JSON object.
func checkObject(t byte, payload []byte) *protoError {
	p := bytes.TrimLeft(payload, " \t\r\n")
	if len(p) == 0 || p[0] != '{' || !json.Valid(payload) {
		return errProtocol("%s payload is not a JSON object", typeName(t))
	}
	return nil
}

// Messages the agent sends.

type helloReply struct {
	Version      int      `json:"version"`
	Session      string   `json:"session"`
	Agent        string   `json:"agent"`
	Capabilities []string `json:"capabilities"`
}

type startedMsg struct {
	Pid int `json:"pid"`
}

type exitMsg struct {
	Code     *int `json:"code"`
	Signal   *int `json:"signal"`
	TimedOut bool `json:"timed_out"`
}

type detachedExitMsg struct {
	Detached bool `json:"detached"`
	Pid      int  `json:"pid"`
}

type fileMsg struct {
	Mode uint32 `json:"mode"`
	Size int64  `json:"size"`
}

type errorMsg struct {
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

var (
	agentName    = "microbox-agent 1"
	capabilities = []string{"exec", "tty", "signal", "files", "ping", "shutdown", "identity", "cancel", "connect", "tar", "window", "net", "dns"}
	doneJSON     = []byte("{}")
)
