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

	"microbox/proto"
)

// The protocol's constants are defined once, in proto (proto/proto.go); these
// are the agent's short names for them.
const (
	protocolVersion = proto.Version
	headerSize      = proto.HeaderSize
	maxPayload      = proto.MaxPayload
	chunkSize       = proto.ChunkSize
	maxPing         = 64
)

// typeNames names every known type; rawTypes carry raw bytes, every other
// type one JSON object.
var (
	typeNames = proto.Names
	rawTypes  = proto.Raw
)

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
//
// Each payload is copied once, from the bytes fed straight into a buffer of
// its final size: a frame that spans many reads (a 64 KiB frame arrives in
// 4 KiB pieces) is not gathered in a growing buffer first.
type Decoder struct {
	head   [headerSize]byte // the header being gathered, then the current frame's
	nhead  int
	cur    *Frame // the frame whose payload is being filled (its header is valid)
	filled int
	bad    []byte // after an error: the bytes from the bad header on
}

// Feed takes data and returns every whole frame now available. After an
// error the decoder holds the bytes from the bad header on (see Salvage) and
// must not be fed again: the stream has lost its frame boundaries.
func (d *Decoder) Feed(data []byte) ([]Frame, error) {
	var frames []Frame
	for len(data) > 0 {
		if d.cur == nil {
			n := copy(d.head[d.nhead:], data)
			d.nhead += n
			data = data[n:]
			if d.nhead < headerSize {
				break
			}
			length := binary.BigEndian.Uint32(d.head[0:4])
			t := d.head[4]
			var err error
			if length < 5 || length > maxPayload+5 {
				err = errProtocol("frame length %d outside 5..%d", length, maxPayload+5)
			} else if _, ok := typeNames[t]; !ok {
				err = errProtocol("unknown frame type 0x%02x", t)
			}
			if err != nil {
				d.bad = append(append([]byte(nil), d.head[:]...), data...)
				d.nhead = 0
				return frames, err
			}
			d.cur = &Frame{Type: t, Stream: binary.BigEndian.Uint32(d.head[5:9]),
				Payload: make([]byte, int(length)-5)}
		}
		n := copy(d.cur.Payload[d.filled:], data)
		d.filled += n
		data = data[n:]
		if d.filled == len(d.cur.Payload) {
			frames = append(frames, *d.cur)
			d.cur, d.nhead, d.filled = nil, 0, 0
		}
	}
	return frames, nil
}

// held returns the bytes taken towards the next frame (or, after an error,
// from the bad header on), as they came.
func (d *Decoder) held() []byte {
	if d.bad != nil {
		return d.bad
	}
	b := append([]byte(nil), d.head[:d.nhead]...)
	if d.cur != nil {
		b = append(b, d.cur.Payload[:d.filled]...)
	}
	return b
}

// Salvage returns what followed the start of the bad or torn frame at the
// head of the buffer: the bytes in which a resynchronising hunt begins.
func (d *Decoder) Salvage() []byte {
	b := d.held()
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b[1:]...)
}

// Pending returns the number of bytes buffered towards the next frame.
func (d *Decoder) Pending() int { return d.nhead + d.filled + len(d.bad) }

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
	capabilities = []string{proto.CapExec, proto.CapTTY, proto.CapSignal, proto.CapFiles,
		proto.CapPing, proto.CapShutdown, proto.CapIdentity, proto.CapCancel, proto.CapConnect,
		proto.CapTar, proto.CapWindow, proto.CapNet, proto.CapDNS, proto.CapTarExport,
		proto.CapMounts}
	doneJSON = []byte("{}")
)
