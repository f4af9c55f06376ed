package main

// The box's traffic counters (<box dir>/net-stats.json), for `microbox
// stats`: bytes the box sent (tx) and received (rx) through its egress
// proxy, the connections the proxy served and the number refused (net.log's
// count). They are counted on the guest's side of each proxy connection, so
// HTTP headers and TLS count, DNS and published ports do not. The file is
// rewritten whole (a temporary file renamed over it) at most once a second,
// and only when a figure changed; a new shim of the same box (the old one
// was killed) goes on from the figures in the file.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

const netStatsEvery = time.Second

type netStats struct {
	rx, tx, conns atomic.Uint64
	log           *netLog // its count is the refused figure; nil: none
	path          string
}

type netStatsFile struct {
	RxBytes     uint64 `json:"rx_bytes"`
	TxBytes     uint64 `json:"tx_bytes"`
	Connections uint64 `json:"connections"`
	Refused     uint64 `json:"refused"`
}

// openNetStats resumes the counters of path, if a shim before this one left them.
func openNetStats(path string, log *netLog) *netStats {
	n := &netStats{log: log, path: path}
	if b, err := os.ReadFile(path); err == nil {
		var f netStatsFile
		if json.Unmarshal(b, &f) == nil {
			n.rx.Store(f.RxBytes)
			n.tx.Store(f.TxBytes)
			n.conns.Store(f.Connections)
		}
	}
	return n
}

func (n *netStats) snapshot() netStatsFile {
	f := netStatsFile{RxBytes: n.rx.Load(), TxBytes: n.tx.Load(), Connections: n.conns.Load()}
	if n.log != nil {
		n.log.mu.Lock()
		f.Refused = n.log.count
		n.log.mu.Unlock()
	}
	return f
}

// write replaces the file with the figures now; false if it could not.
func (n *netStats) write(f netStatsFile) bool {
	b, _ := json.Marshal(f)
	tmp, err := os.CreateTemp(filepath.Dir(n.path), ".net-stats-*")
	if err != nil {
		return false
	}
	_, werr := tmp.Write(append(b, '\n'))
	cerr := tmp.Close()
	if werr != nil || cerr != nil || os.Rename(tmp.Name(), n.path) != nil {
		_ = os.Remove(tmp.Name())
		return false
	}
	return true
}

// run writes the file now and then whenever a figure changed, until the shim exits.
func (n *netStats) run() {
	var last netStatsFile
	written := false
	for {
		if f := n.snapshot(); !written || f != last {
			if n.write(f) {
				last, written = f, true
			}
		}
		time.Sleep(netStatsEvery)
	}
}
