"""`microbox build`: Dockerfile builds, each step run in a microVM.

archive.py    ADD's local tar archives: told by content, unpacked under the destination
context.py    The build context: COPY sources matched, hashed and sent as a tar
dockerfile.py Dockerfiles into build plans: stages, global ARGs, --target
evaluate.py   One stage's instructions walked as Docker dispatches them
expand.py     Variable expansion in Dockerfile words, as BuildKit's lexer does it
ignore.py     `.dockerignore` patterns, as Docker's patternmatcher reads them
model.py      Stages and instructions as the executor gets them, and cache keys
syntax.py     A Dockerfile's lines into raw instructions: continuations, heredocs
"""
