"""How we talk to each system: one package per system (spec, client, emulator) and the shared core."""
