package main

// An outbox is the write side of one connection: frames queue here and one
// goroutine writes them, coalesced into a single writev when several wait.
// Each item may carry an action to run once its bytes are written (granting
// flow-control credit, half-closing a TCP connection).

import (
	"io"
	"net"
	"sync"
)

type item struct {
	b     []byte
	after func()
}

type outbox struct {
	mu     sync.Mutex
	cond   *sync.Cond
	items  []item
	bytes  int
	limit  int // push waits while more than this is queued; 0: no limit
	closed bool
}

func newOutbox(limit int) *outbox {
	o := &outbox{limit: limit}
	o.cond = sync.NewCond(&o.mu)
	return o
}

// push queues b; false if the outbox is closed (the bytes are dropped).
func (o *outbox) push(b []byte, after func()) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for o.limit > 0 && o.bytes > o.limit && !o.closed {
		o.cond.Wait()
	}
	if o.closed {
		return false
	}
	o.items = append(o.items, item{b, after})
	o.bytes += len(b)
	o.cond.Broadcast()
	return true
}

func (o *outbox) close() {
	o.mu.Lock()
	o.closed = true
	o.cond.Broadcast()
	o.mu.Unlock()
}

// run writes until the outbox is closed and drained, or a write fails;
// it returns the write error, if any.
func (o *outbox) run(w io.Writer) error {
	for {
		o.mu.Lock()
		for len(o.items) == 0 && !o.closed {
			o.cond.Wait()
		}
		batch := o.items
		o.items = nil
		o.bytes = 0
		closed := o.closed
		o.cond.Broadcast()
		o.mu.Unlock()
		if len(batch) == 0 && closed {
			return nil
		}
		bufs := make(net.Buffers, 0, len(batch))
		for _, it := range batch {
			if len(it.b) > 0 {
				bufs = append(bufs, it.b)
			}
		}
		if _, err := bufs.WriteTo(w); err != nil {
			o.close()
			return err
		}
		for _, it := range batch {
			if it.after != nil {
				it.after()
			}
		}
	}
}
