package main

// A byteQueue carries one stream's bytes from the host (STDIN of a process,
// DATA of CONNECT and TAR_PUT) to the goroutine that writes them where they
// go. The port reader only appends, so a consumer that does not read stalls
// the other streams of the port only once its queue is full (then the port
// reader waits for it: without flow control, the only back-pressure the
// protocol has).

import (
	"errors"
	"io"
	"sync"
	"time"
)

const queueLimit = 4 << 20 // queued bytes per stream

// errQueueAborted: run stopped because the queue was aborted.
var errQueueAborted = errors.New("queue aborted")

type byteQueue struct {
	mu     sync.Mutex
	cond   sync.Cond
	items  [][]byte // an empty item means end of input
	size   int
	closed bool
}

func newByteQueue() *byteQueue {
	q := &byteQueue{}
	q.cond.L = &q.mu
	return q
}

// push queues b (empty: end of input). It blocks while the queue is full and
// the writer is alive, checking gone every 100 ms: the port reader waits
// here, so it cannot see the host leave by reading. It returns false when
// gone reported true.
func (q *byteQueue) push(b []byte, gone func() bool) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for !q.closed && q.size > 0 && q.size+len(b) > queueLimit {
		if gone() {
			return false
		}
		t := time.AfterFunc(100*time.Millisecond, q.cond.Broadcast)
		q.cond.Wait()
		t.Stop()
	}
	if !q.closed {
		q.items = append(q.items, b)
		q.size += len(b)
		q.cond.Broadcast()
	}
	return true
}

// abort drops everything queued and stops the writer.
func (q *byteQueue) abort() {
	q.mu.Lock()
	q.closed = true
	q.items = nil
	q.size = 0
	q.cond.Broadcast()
	q.mu.Unlock()
}

// run writes queued bytes to w until the end of input, a failed write or
// abort. At the end of input it calls eof and returns its error; with a nil
// eof (a PTY) it writes ^D, the terminal's end-of-file character, and goes
// on. It returns errQueueAborted after abort, and the queue is aborted
// whenever run returns.
func (q *byteQueue) run(w io.Writer, eof func() error) (err error) {
	defer q.abort()
	for {
		q.mu.Lock()
		for len(q.items) == 0 && !q.closed {
			q.cond.Wait()
		}
		if q.closed {
			q.mu.Unlock()
			return errQueueAborted
		}
		b := q.items[0]
		q.items[0] = nil
		q.items = q.items[1:]
		q.mu.Unlock()

		switch {
		case len(b) > 0:
			_, err = w.Write(b)
		case eof != nil:
			return eof()
		default:
			_, err = w.Write([]byte{0x04})
		}
		if err != nil {
			return err
		}
		q.mu.Lock()
		q.size -= len(b)
		q.cond.Broadcast()
		q.mu.Unlock()
	}
}
