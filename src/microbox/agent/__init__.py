"""The host's side of the agent protocol v1 (docs/protocol.md).

bulk.py      tar trees and TCP connections over a Channel (cp, workspaces, ports)
channel.py   One session with the guest agent over one virtio-serial port
ops.py       Operations of protocol v1 over a Channel
protocol.py  Frame codec of protocol v1 (docs/protocol.md)
wire_gen.py  frame types, limits and capabilities, generated from proto/proto.go
"""
