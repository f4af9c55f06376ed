package main

// Frames of protocol v1 (docs/protocol.md), as far as a relay needs them: the
// header, the set of known types, and which frames end a stream. Payloads are
// forwarded untouched; only HELLO, HELLO_REPLY and WINDOW are read here.

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"microbox/proto"
)

// The protocol's constants are defined once, in proto (proto/proto.go); these
// are the shim's short names for them.
const (
	protocolVersion = proto.Version
	headerSize      = proto.HeaderSize
	maxPayload      = proto.MaxPayload
	chunkSize       = proto.ChunkSize
)

// requests open a stream (sent by a client on a stream id it has not used).
var requests = map[byte]bool{
	proto.Ping: true, proto.Exec: true, proto.Put: true, proto.Get: true, proto.TarGet: true, proto.TarPut: true,
	proto.Shutdown: true, proto.Connect: true,
}

// followUps are the other frames a client may send on one of its streams.
var followUps = map[byte]bool{
	proto.Stdin: true, proto.Signal: true, proto.Resize: true, proto.Data: true, proto.Cancel: true,
}

// fromGuest are the frames an agent may send.
var fromGuest = map[byte]bool{
	proto.HelloReply: true, proto.Pong: true, proto.Window: true, proto.Started: true, proto.Stdout: true,
	proto.Stderr: true, proto.Exit: true, proto.File: true, proto.Data: true, proto.Done: true, proto.Connected: true,
	proto.Error: true,
}

// counted frames are the bulk data that flow control meters (their payload bytes).
func counted(t byte) bool {
	return t == proto.Stdout || t == proto.Stderr || t == proto.Data || t == proto.Stdin
}

// Frame is one decoded frame; Payload is owned by it.
type Frame struct {
	Type    byte
	Stream  uint32
	Payload []byte
}

func (f Frame) encode() []byte { return encode(f.Type, f.Stream, f.Payload) }

func encode(t byte, stream uint32, payload []byte) []byte {
	b := make([]byte, headerSize+len(payload))
	binary.BigEndian.PutUint32(b[0:4], uint32(len(payload)+5))
	b[4] = t
	binary.BigEndian.PutUint32(b[5:9], stream)
	copy(b[headerSize:], payload)
	return b
}

func encodeJSON(t byte, stream uint32, v interface{}) []byte {
	body, err := json.Marshal(v)
	if err != nil {
		panic(err) // only the shim's own fixed types are marshalled
	}
	return encode(t, stream, body)
}

var errBadFrame = errors.New("malformed frame")

// readFrame reads one whole frame; `known` says which types are acceptable.
func readFrame(r io.Reader, hdr []byte, known map[byte]bool) (Frame, error) {
	if _, err := io.ReadFull(r, hdr[:headerSize]); err != nil {
		return Frame{}, err
	}
	length := binary.BigEndian.Uint32(hdr[0:4])
	t := hdr[4]
	if length < 5 || length > maxPayload+5 {
		return Frame{}, fmt.Errorf("%w: length %d", errBadFrame, length)
	}
	if !known[t] {
		return Frame{}, fmt.Errorf("%w: type 0x%02x", errBadFrame, t)
	}
	payload := make([]byte, length-5)
	if _, err := io.ReadFull(r, payload); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, err
	}
	return Frame{Type: t, Stream: binary.BigEndian.Uint32(hdr[5:9]), Payload: payload}, nil
}

func windowFrame(stream uint32, n uint32) []byte {
	var p [4]byte
	binary.BigEndian.PutUint32(p[:], n)
	return encode(proto.Window, stream, p[:])
}

type errorMsg struct {
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

func union(sets ...map[byte]bool) map[byte]bool {
	out := map[byte]bool{}
	for _, s := range sets {
		for k := range s {
			out[k] = true
		}
	}
	return out
}

var fromClient = union(requests, followUps, map[byte]bool{proto.Hello: true})
