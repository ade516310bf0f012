"""The pure core shared by the store agent and the central server: no I/O anywhere below."""
