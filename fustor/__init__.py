"""Fustor: a live, merged, queryable copy of the metadata of many file trees."""

__version__ = "0.9.0"
