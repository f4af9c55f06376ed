"""`microbox build`: Dockerfile builds, each step run in a microVM.

archive.py    ADD's local tar archives: told by content, unpacked under the destination
boxcommit.py  `microbox commit`: a box's disk and configuration made an image
buildbox.py   The box a build stage's steps run in, and how its disk becomes layers
builder.py    `microbox build`: a Dockerfile's stages, step by step, in boxes
cache.py      The build cache: one immutable qcow2 layer per step that changed files
context.py    The build context: COPY sources matched, hashed and sent as a tar
dockerfile.py Dockerfiles into build plans: stages, global ARGs, --target
evaluate.py   One stage's instructions walked as Docker dispatches them
expand.py     Variable expansion in Dockerfile words, as BuildKit's lexer does it
files.py      COPY, ADD and WORKDIR: files into a build box, with Docker's rules
ignore.py     `.dockerignore` patterns, as Docker's patternmatcher reads them
model.py      Stages and instructions as the executor gets them, and cache keys
report.py     How a build reports: its steps, and what its RUN steps print
run.py        The entry of a build: inputs checked, then the build under the store lock
syntax.py     A Dockerfile's lines into raw instructions: continuations, heredocs
"""
