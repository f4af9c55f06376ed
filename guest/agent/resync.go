package main

// Resynchronisation after the byte stream lost its frame boundaries
// (docs/protocol.md, "Losing and regaining sync").
//
// A host client killed in the middle of writing a frame leaves the first part
// of that frame in the port. virtio_console does not report a disconnect that
// is followed by a reconnect before read(2) runs again, so the next host's
// bytes would complete the torn frame and every boundary after it would be
// wrong. Two rules bring the session back:
//
//   - frameGap: once a frame has begun, the rest of it arrives promptly (the
//     host writes whole frames). A partial frame followed by silence is torn.
//   - After any framing or protocol error the agent hunts: it scans the bytes
//     that followed the point of failure, and all later input, for a
//     well-formed HELLO on stream 0, which starts a new session.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"microbox/proto"
	"time"
)

// frameGap is how long the rest of a begun frame may take to arrive.
var frameGap = 3 * time.Second // a var so tests can shorten it

// maxHello bounds a HELLO payload while hunting, so that a false match with
// a large length cannot hold the hunt back.
const maxHello = 4096

// hunter looks for the next HELLO in a byte stream of unknown alignment.
type hunter struct {
	buf []byte
}

// feed appends data and returns the first well-formed HELLO and the bytes
// after it. It keeps only what a later HELLO could still start in.
func (h *hunter) feed(data []byte) (Frame, []byte, bool) {
	h.buf = append(h.buf, data...)
	// keep: the earliest offset that may begin a HELLO not yet whole; at
	// least the last headerSize-1 bytes, which may begin a header.
	keep := len(h.buf) - (headerSize - 1)
	if keep < 0 {
		keep = 0
	}
	for i := 0; i+headerSize <= len(h.buf); i++ {
		hd := h.buf[i:]
		if hd[4] != proto.Hello || binary.BigEndian.Uint32(hd[5:9]) != 0 {
			continue
		}
		length := int(binary.BigEndian.Uint32(hd[0:4]))
		if length < 5+2 || length > 5+maxHello {
			continue
		}
		end := 4 + length
		if len(hd) < end {
			if i < keep {
				keep = i
			}
			continue
		}
		payload := hd[headerSize:end]
		if !isHello(payload) {
			continue
		}
		f := Frame{Type: proto.Hello, Payload: append([]byte(nil), payload...)}
		rest := append([]byte(nil), hd[end:]...)
		h.buf = nil
		return f, rest, true
	}
	h.buf = append(h.buf[:0], h.buf[keep:]...)
	return Frame{}, nil, false
}

// isHello: a JSON object with a version and a session, as every host sends.
func isHello(payload []byte) bool {
	if len(payload) == 0 || payload[0] != '{' {
		return false
	}
	var h helloMsg
	dec := json.NewDecoder(bytes.NewReader(payload))
	if dec.Decode(&h) != nil || dec.More() {
		return false
	}
	return h.Version != nil && h.Session != nil
}
