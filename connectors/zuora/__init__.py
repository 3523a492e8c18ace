"""Zuora: spec (environments, credential fields, hosts), REST client, and its emulator."""
