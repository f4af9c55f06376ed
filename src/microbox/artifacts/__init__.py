"""Builders of what boxes run on: the guest kernel and agent, the box shim, the VMM's libraries.

agent.py      Building the guest agent (Go, static) and its initramfs into the cache
gobuild.py    Building microbox's Go programs (the guest agent, the box shim)
initramfs.py  A newc cpio archive writer, enough for the agent's initramfs
kernel.py     Build and cache the guest kernel from the distribution's kernel source
shim.py       Building the box shim (Go, static), the host process a box's clients share
vmm_libs.py   Small builds of libraries QEMU links, put first on the VMM's library path
"""
