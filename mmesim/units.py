"""Binary byte units. Inside mmesim sizes are bytes; these convert at the edges."""

KiB = 2**10
MiB = 2**20
GiB = 2**30
TiB = 2**40
