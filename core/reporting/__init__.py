"""Reporting: result tables, figures and the HTML report, all read from the store."""
