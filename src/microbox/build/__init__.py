"""`microbox build`: Dockerfile builds, each step run in a microVM.

expand.py     Variable expansion in Dockerfile words, as BuildKit's lexer does it
"""
