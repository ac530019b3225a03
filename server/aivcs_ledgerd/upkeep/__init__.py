"""Engine upkeep: background work that keeps the database healthy and the process small.

checkpoint.py  flushes a durable engine's memtable before writes could stall
heap.py        hands memory the engine freed back to the operating system
health.py      gRPC health that follows the database
reconnect.py   the health probe's question, and reconnection of a remote database
"""
