"""The bundled sample projects (clip, masks, licence notes): package data of `engine.sample_projects`.

pyproject.toml maps this folder into the installed `engine` package; code reads it through importlib.resources.
"""
