"""Zoho CRM: spec (data centres, credential fields, hosts), REST client, and its emulator."""
