"""Tenancy: who is calling (identities, access keys, Keystone tokens), what they may do (roles,
scopes), how much they may hold (quotas) and what they consumed (the usage ledger and per-second
metering). docs/tenancy.md is the theory of operation.

This package sits beside :mod:`hyper.state`: its stores write their own tables into hyperd's
SQLite file through a connection they are given, and never import the other stores.
"""
