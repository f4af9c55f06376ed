"""Box lifecycle: create, start, stop, reconcile, templates, snapshots, pools, housekeeping.

boxmounts.py    A box's mounts as its VM's devices and boot parameters, and the...
boxdir.py       The run directory of one box
catrust.py      A box's added CAs written into its guest at every start
control.py      Acting on existing boxes
doctor.py       `doctor`
fork.py         Fork: running clones of a running box, through a snapshot of it
freeze.py       A box's vCPUs stopped on a command's behalf (snapshot, fork), and the...
layers.py       A running box's disk cut into layers, as a Dockerfile build needs them
lifecycle.py    Box lifecycle as transactions
log.py          The callback a long step reports its progress through, one line at a...
maintenance.py  gc, cleanup and kill
orphans.py      Finding box VMMs from /proc alone, so `kill`, `gc` and `doctor` work...
pool.py         Pools
reconcile.py    Reconcile a box's stored status with reality before acting on it
shim.py         The shim of a box
shim_start.py   Starting the shim of a running box (microbox.core.shim says what it is)
snapshots.py    Snapshots of running boxes, in the same form as warm-start templates...
snapspace.py    Room for a snapshot (core/snapshots.py)
states.py       The one table of a box's transitions: what each action accepts and leaves
stats.py        What a box costs: CPU, memory, network, disk (read where each lives)
templates.py    Warm-start templates
vm.py           Booting the VM of a box
warm.py         Starting a box
"""
