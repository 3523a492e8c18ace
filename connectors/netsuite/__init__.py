"""NetSuite: spec (credential fields, hosts), REST client, and the emulator that stands in for it."""
