"""Contract suites for the NetSuite, Zuora and Zoho emulators, over real HTTP."""
