package main

import (
	"io"
	"net"
	"sync"
)

// relay copies both ways, passing each side's end of input on as a
// half-close, and closes both once both directions ended (or one failed).
func relay(a net.Conn, aIn io.Reader, b net.Conn) {
	var wg sync.WaitGroup
	var once sync.Once
	abort := func() { once.Do(func() { a.Close(); b.Close() }) }
	half := func(dst net.Conn, src io.Reader) {
		defer wg.Done()
		if _, err := io.Copy(dst, src); err != nil {
			abort()
			return
		}
		cw, ok := dst.(interface{ CloseWrite() error })
		if !ok || cw.CloseWrite() != nil {
			abort()
		}
	}
	wg.Add(2)
	go half(b, aIn)
	go half(a, b)
	wg.Wait()
	abort()
}
