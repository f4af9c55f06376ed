"""The `microbox` command (click): parsing and rendering only, one SDK call per verb.

attach.py     Attaching a terminal to an execution
boxes.py      Lifecycle commands
build.py      `microbox kernel build`, `microbox agent build`
imagebuild.py `microbox build` and `microbox commit`
common.py     Options and error handling shared by every command
cp.py         `microbox cp SRC DST`, `microbox export BOX`
images.py     `microbox image ...`
inside.py     Working inside a running box
main.py       The `microbox` command
maint.py      Housekeeping
mcp.py        `microbox mcp`
observe.py    `microbox stats` and `microbox events`
output.py     Rendering
packs.py      `microbox pack ...`
pool.py       `microbox pool ...`
progress.py   Progress of image pulls and builds
query.py      Commands that look at boxes or work inside them
render.py     How boxes look
run.py        `microbox run`
serve.py      `microbox serve`
snapshots.py  `microbox snapshot ...` and `microbox fork`
volumes.py    `microbox volume ...`
workspace.py  `microbox workspace push|export`
"""
