"""The engine's shipped weights and the records of how they were made: package data of `engine.resources`.

pyproject.toml maps this folder into the installed `engine` package; code reads it through importlib.resources.
"""
