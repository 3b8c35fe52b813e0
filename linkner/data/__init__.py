"""Labelled data: span records, BIO tag conversion, and file readers/writers."""
