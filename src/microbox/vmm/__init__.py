"""QEMU: the argv, spawning, QMP, migration streams, disk overlays, the accelerator.

accel.py      Choosing the accelerator without ever hanging
migration.py  QEMU migration streams to and from files, over QMP
process.py    A process's identity and end
qcow2.py      An empty qcow2 overlay over a backing file, written directly
qemu_argv.py  The QEMU command line of a box, as a pure function of its parameters
qmp.py        QMP, for what only the VMM can do
ramsplit.py   A saved VM's whole migration stream split into its RAM, written into a...
spawn.py      Starting the QEMU process of a box
tsc.py        The host's TSC frequency, for the guest kernel under TCG
"""
