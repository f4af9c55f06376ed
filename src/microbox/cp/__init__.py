"""`microbox cp`: file trees between the host and a box, as tar streams.

report.py    what a copy did (CopyReport)
chunks.py    byte chunks <-> blocking file objects, in bounded memory
tarwrite.py  a host tree as a streamed PAX tar (copy in)
extract.py   an untrusted tar from a box into a host directory (copy out)
transfer.py  Docker's `cp` rules for both directions, over the agent's tar transport

The box is untrusted: nothing it sends can make a copy out create, replace or
follow anything outside the destination (docs/boxes.md, "Copying files").
"""
