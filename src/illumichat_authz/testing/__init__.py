"""Test helpers for services that use illumichat_authz (fixtures, minting, strategies)."""
