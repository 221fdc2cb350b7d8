"""The DVC stages, one module each, named like the stage in dvc.yaml.

Only digits.cli imports them; a stage never imports another stage.
"""
