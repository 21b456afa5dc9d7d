"""Archived versions of the changefeed schemas, kept so that old data stays readable.

``<namespace>.<Name>.v<N>.avsc``: a standalone copy (every referenced type inlined) of a schema
as it was before a change. The codec loads each as an extra writer schema. This file makes the
folder a package so that its ``*.avsc`` files ship with the distribution.
"""
