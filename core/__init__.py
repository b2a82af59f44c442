"""Assay core: all the logic, importable without Streamlit."""
