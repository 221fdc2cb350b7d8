"""`digits score`: the batch scorer, in CSV, JSONL or Parquet, on this machine or on Ray.

command.py (the click command) builds options.py's ScoreOptions once and runs local.py or
ray_engine.py; both engines read through inputs.py, write rows through rows.py and count through
summary.py, and none of those imports an engine or the command.
"""
