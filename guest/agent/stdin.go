package main

// Each attached process gets its own stdin writer with a bounded queue, so a
// process that does not read its stdin cannot stall the other streams of the
// port until the queue is full (then the port reader waits for it: that is
// the only back-pressure the protocol has).

import (
	"os"
	"sync"
	"time"
)

const stdinLimit = 4 << 20 // queued bytes per process

type stdinQueue struct {
	mu     sync.Mutex
	cond   sync.Cond
	items  [][]byte // an empty item means end of input
	size   int
	closed bool
}

func newStdinQueue() *stdinQueue {
	q := &stdinQueue{}
	q.cond.L = &q.mu
	return q
}

// push queues b (empty: close stdin). It blocks while the queue is full and
// the writer is alive, checking gone every 100 ms: the port reader waits
// here, so it cannot see the host leave by reading. It returns false when
// gone reported true.
func (q *stdinQueue) push(b []byte, gone func() bool) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for !q.closed && q.size > 0 && q.size+len(b) > stdinLimit {
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
func (q *stdinQueue) abort() {
	q.mu.Lock()
	q.closed = true
	q.items = nil
	q.size = 0
	q.cond.Broadcast()
	q.mu.Unlock()
}

// run writes queued data to w. With a PTY an empty item writes ^D (the
// terminal's EOF character) and w stays open; otherwise it closes w.
func (q *stdinQueue) run(w *os.File, tty bool) {
	if !tty {
		defer w.Close()
	}
	for {
		q.mu.Lock()
		for len(q.items) == 0 && !q.closed {
			q.cond.Wait()
		}
		if q.closed {
			q.mu.Unlock()
			return
		}
		b := q.items[0]
		q.items[0] = nil
		q.items = q.items[1:]
		q.mu.Unlock()

		var err error
		if len(b) == 0 {
			if !tty {
				q.abort()
				return
			}
			_, err = w.Write([]byte{0x04})
		} else {
			_, err = w.Write(b)
		}
		if err != nil {
			q.abort()
			return
		}
		q.mu.Lock()
		q.size -= len(b)
		q.cond.Broadcast()
		q.mu.Unlock()
	}
}
