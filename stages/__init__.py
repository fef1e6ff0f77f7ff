"""Pipeline stages: ingest → clean → augment → tokenize → finetune → evaluate → register.

Each module is one DVC stage (`python -m stages.<name>`): a pure core function plus a thin I/O shell.
"""
