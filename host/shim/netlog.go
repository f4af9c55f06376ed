package main

// The box's network log (<box dir>/net.log): one line per refused
// connection, numbered, so the count survives in the file itself:
//
//	2026-01-02T03:04:05.678Z refused #3 bad.test:80 (203.0.113.11): a name not in --allow-host
//
// A guest can provoke refusals at will, so the file is bounded: past
// netLogMax it moves to net.log.1 (replacing the one before) and a new
// file starts; the numbering goes on.

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

const netLogMax = 1 << 20

type netLog struct {
	mu    sync.Mutex
	path  string
	f     *os.File
	size  int64
	count uint64
}

func openNetLog(path string) (*netLog, error) {
	l := &netLog{path: path}
	l.count = lastCount(path + ".1")
	if n := lastCount(path); n > l.count {
		l.count = n
	}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *netLog) open() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	l.f, l.size = f, st.Size()
	return nil
}

// refused records one refused connection and returns its number.
func (l *netLog) refused(what string) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.count++
	line := fmt.Sprintf("%s refused #%d %s\n",
		time.Now().UTC().Format("2006-01-02T15:04:05.000Z"), l.count, oneLine(what))
	if l.size+int64(len(line)) > netLogMax {
		l.f.Close()
		_ = os.Rename(l.path, l.path+".1")
		if l.open() != nil {
			l.f = nil
		}
	}
	if l.f != nil {
		if n, err := l.f.WriteString(line); err == nil {
			l.size += int64(n)
		}
	}
	return l.count
}

// oneLine keeps a guest-chosen name from breaking the log's line format.
func oneLine(s string) string {
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// lastCount reads the number of the last line of a log file (0 if none).
func lastCount(path string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	b = bytes.TrimRight(b, "\n")
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[i+1:]
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Split(bufio.ScanWords)
	for sc.Scan() {
		if w := sc.Text(); strings.HasPrefix(w, "#") {
			if n, err := strconv.ParseUint(w[1:], 10, 64); err == nil {
				return n
			}
		}
	}
	return 0
}
