package main

// The reaper is the only code that waits for children. As PID 1 it also
// collects every orphan re-parented to the agent. Processes are started with
// Reaper.Start, which holds the registration lock across the fork so that an
// exit reaped by the loop is always matched with its registration.

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// Reaper dispatches exit statuses of registered children.
type Reaper struct {
	mu      sync.Mutex
	waiters map[int]func(syscall.WaitStatus)
	sig     chan os.Signal
}

var (
	reaperOnce sync.Once
	theReaper  *Reaper
)

// startReaper starts the process-wide reaper (once) and returns it.
func startReaper() *Reaper {
	reaperOnce.Do(func() {
		r := &Reaper{waiters: make(map[int]func(syscall.WaitStatus)), sig: make(chan os.Signal, 1)}
		signal.Notify(r.sig, syscall.SIGCHLD)
		go r.loop()
		theReaper = r
	})
	return theReaper
}

func (r *Reaper) loop() {
	for range r.sig {
		r.Reap()
	}
}

// Reap collects every exited child without blocking and dispatches its
// status. It reports whether the agent still has children.
func (r *Reaper) Reap() bool {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil { // ECHILD: no children at all
			return false
		}
		if pid <= 0 {
			return true
		}
		// Taking the lock here orders this lookup after any registration
		// that was in progress when the child was reaped.
		r.mu.Lock()
		fn := r.waiters[pid]
		delete(r.waiters, pid)
		r.mu.Unlock()
		if fn != nil {
			fn(ws)
		}
	}
}

// Start runs spawn (which must fork a child of this process and return its
// pid) under the registration lock and registers onExit for the pid. onExit
// runs on the reaper goroutine and must not block; it may be nil.
func (r *Reaper) Start(spawn func() (int, error), onExit func(syscall.WaitStatus)) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := spawn()
	if err != nil {
		return 0, err
	}
	if onExit != nil {
		r.waiters[pid] = onExit
	}
	return pid, nil
}
