"""Kedro wiring only: nodes call the library; the DAG is built from parameters."""
