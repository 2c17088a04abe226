"""Widgets the screens are built from: tables, the GPU panel, the header, graphs."""
