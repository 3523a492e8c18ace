"""The demo: the whole product on one machine against the built-in emulators (`./start.sh`)."""
