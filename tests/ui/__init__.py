"""Tests of what a person sees: the Streamlit pages, through AppTest and a real browser."""
