"""SQLite: durable intent about boxes, images and pools (never liveness).

boxes.py       Box rows
db.py          The SQLite database
images.py      Image rows
migrations.py  Numbered schema migrations
pools.py       Pool rows
readonly.py    Reading the database without changing it (for `doctor` and `kill`)
events.py      The event log: one JSON line per thing done to a box (not SQLite)
status.py      A box's seven statuses and the groups the code tests them by
"""
