"""Plumbing that server/, models/ and licensing/ all share: the error base, the clock, write transactions, file hashes,
process liveness and base64 text. It imports none of them, nor Flask."""
